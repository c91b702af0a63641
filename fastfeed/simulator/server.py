"""The simulator server: a real picows WebSocket server speaking every feed fastfeed reads.

Each feed is served on its simulator path (``fastfeed.feeds.registry``): Vantafin
(``LS``), sFOX ticker, Massive/Polygon per-second aggregates (``A``). One asyncio loop
serves every connection; each subscribed connection has a producer task
(:mod:`.producer`) that walks the simulated clock and writes whole seconds of bars as
pre-framed WebSocket frames, many frames per ``transport.write`` (coalesced), and
honours ``pause_writing``/``resume_writing`` (flow control) so max-rate mode sends
exactly as fast as the client reads. One module per dialect: :mod:`.vantafin`,
:mod:`.massive`, :mod:`.sfox`.

Ground truth: each connection records what it wrote (``SimConnection.sent_bars()``,
``Simulator.sent_bars()``), in send order, corrections flagged.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from picows import WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server  # type: ignore[attr-defined]

from ..feeds.registry import FEEDS
from ..transport.masking import MaskingAdapter
from .connection import BAR_DTYPE, SimConnection
from .faults import Faults
from .market import Market
from .massive import MassiveConnection
from .sfox import SfoxConnection
from .vantafin import VantafinConnection

__all__ = ["SimConfig", "Simulator", "CONNECTIONS"]

#: the connection class of each feed
CONNECTIONS: dict[str, type[SimConnection]] = {
    "vantafin": VantafinConnection,
    "sfox": SfoxConnection,
    "massive": MassiveConnection,
}
_PATH_FEED = {FEEDS[name].simulator_path: name for name in CONNECTIONS}


@dataclass
class SimConfig:
    """Simulator settings (see ``python -m fastfeed.simulator --help``)."""

    seed: int = 0
    n_tickers: int = 12_000
    trade_fraction: float = 0.5
    bars_per_frame: int = 100
    #: send arrays even for one bar per frame (Vantafin sends a bare object at 1 bar/frame)
    always_array: bool = False
    #: simulated seconds per wall second (1: the simulated clock is wall time)
    speed: float = 1.0
    #: send seconds as fast as the client reads (flow control), ignoring ``speed``
    max_rate: bool = False
    #: stop producing after this many simulated seconds per connection (None: unbounded)
    max_seconds: Optional[int] = None
    #: first simulated second (epoch s); default: now (speed 1) or far enough in the past
    #: that bars never run ahead of the wall clock
    start_second: Optional[int] = None
    #: required API key (None: any key, or none, is accepted)
    api_key: Optional[str] = "sim-key"
    market_open: bool = True
    sfox_interval: int = 3
    sfox_require_auth: bool = True
    record: bool = True
    host: str = "127.0.0.1"
    port: int = 0
    write_chunk: int = 256 * 1024
    ssl_context: Any = None
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if isinstance(self.faults, dict):
            self.faults = Faults(**self.faults)
        if self.bars_per_frame < 1:
            raise ValueError("bars_per_frame must be >= 1")
        if self.speed <= 0:
            raise ValueError("speed must be > 0")


class Simulator:
    """The simulator server (run it inside a running asyncio loop).

    ``sim = await Simulator(SimConfig(...)).start()`` ... ``sim.url("vantafin")`` ...
    ``await sim.stop()``.  For threads/subprocesses see ``fastfeed.simulator.testing``.
    """

    def __init__(self, config: Optional[SimConfig] = None, **kw: Any) -> None:
        if config is None:
            config = SimConfig(**kw)
        elif kw:
            raise TypeError("pass either a SimConfig or keyword arguments")
        self.config = config
        self.market = Market(seed=config.seed, n_tickers=config.n_tickers, trade_fraction=config.trade_fraction)
        self.connections: list[SimConnection] = []
        self._server: Any = None
        self.port = 0
        self.high_water = -1
        self._accepted = 0
        self.rejected = 0  # upgrades refused by the reject_status fault
        self.t0_wall = time.time()
        self.start_second = 0
        self._cache: dict[str, Any] = {}

    # -- clock ------------------------------------------------------------------------------

    def _init_clock(self) -> None:
        cfg = self.config
        now = time.time()
        self.t0_wall = now
        if cfg.start_second is not None:
            self.start_second = int(cfg.start_second)
        elif cfg.max_rate:
            horizon = cfg.max_seconds if cfg.max_seconds else 7 * 86400
            self.start_second = int(now) - int(horizon) - 2
        elif cfg.speed > 1:
            horizon = cfg.max_seconds if cfg.max_seconds else 86400
            self.start_second = int(now) - int(math.ceil(horizon * (1 - 1 / cfg.speed))) - 2
        else:
            self.start_second = int(now)
            if cfg.speed == 1:
                # speed 1 from now: the simulated clock *is* wall time (anchored at the start of
                # the current second, not at ``now``, which would make it lag by up to 1 s), so
                # the burst of second s goes out right after wall time s + 1
                self.t0_wall = float(self.start_second)
        self.high_water = self.start_second - 1

    def sim_clock(self, now: Optional[float] = None) -> float:
        """Simulated time (epoch s, float); never ahead of the wall clock."""
        now = time.time() if now is None else now
        cfg = self.config
        if cfg.max_rate:
            return float("inf")
        return min(self.start_second + (now - self.t0_wall) * cfg.speed, now)

    def ready_until(self) -> int:
        """Seconds ``< ready_until()`` are complete (their bars can be sent)."""
        c = self.sim_clock()
        return 1 << 62 if c == float("inf") else int(math.floor(c))

    def wall_time_of(self, sim_t: float) -> float:
        """Wall time at which the simulated clock reaches ``sim_t``."""
        cfg = self.config
        return max(self.t0_wall + (sim_t - self.start_second) / cfg.speed, sim_t)

    def first_second_for_new_subscriber(self) -> int:
        if self.config.max_rate:
            return max(self.start_second, self.high_water + 1)
        return max(self.start_second, self.ready_until())

    def end_second(self) -> Optional[int]:
        m = self.config.max_seconds
        return None if m is None else self.start_second + int(m)

    def cached(self, key: str, build: Callable[[list[str]], Any]) -> Any:
        """``build(market.tickers)``, computed once per simulator (e.g. a dialect's per-ticker prefixes)."""
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = build(self.market.tickers)
        return v

    # -- life cycle -------------------------------------------------------------------------

    def _factory(self, request: Any) -> Any:
        raw = request.path.decode("latin-1") if isinstance(request.path, bytes) else str(request.path)
        parts = urllib.parse.urlsplit(raw)
        feed = _PATH_FEED.get(parts.path)
        if feed is None:
            return None
        q = urllib.parse.parse_qs(parts.query)
        key = (q.get("apiKey") or q.get("apikey") or [None])[0]
        idx = self._accepted
        self._accepted += 1
        f = self.config.faults
        if f.reject_status and (f.connections == 0 or idx < f.connections):
            self.rejected += 1
            headers = {"Retry-After": str(f.retry_after)} if f.retry_after else None
            body = b"%d refused by the simulator (fault reject_status)" % f.reject_status
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_error_response(f.reject_status, body, headers), None)
        return CONNECTIONS[feed](self, key, idx)

    async def start(self) -> "Simulator":
        self._init_clock()
        kw: dict[str, Any] = {}
        if self.config.ssl_context is not None:
            kw["ssl"] = self.config.ssl_context
        self._server = await ws_create_server(
            self._factory,
            self.config.host,
            self.config.port,
            enable_auto_pong=True,
            max_frame_size=1 << 20,
            logger_name=MaskingAdapter(logging.getLogger("fastfeed.simulator.ws"),
                                        [self.config.api_key] if self.config.api_key else []),
            **kw,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self, timeout: float = 1.0) -> None:
        """CLOSE 1001 every connection, wait up to ``timeout`` for the answers, then hang up."""
        open_ = [c for c in self.connections if not c.closed]
        for c in open_:
            try:
                c.hang_up(1001, "simulator stopping")
            except Exception:
                pass
        end = time.monotonic() + timeout
        while any(not c.closed for c in open_) and time.monotonic() < end:
            await asyncio.sleep(0.01)
        for c in open_:
            if not c.closed and c.transport is not None:
                try:
                    c.transport.disconnect(False)
                except Exception:
                    pass
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except (asyncio.TimeoutError, Exception):
                pass
            self._server = None

    async def __aenter__(self) -> "Simulator":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- addresses & ground truth ------------------------------------------------------------

    def url(self, feed: str = "vantafin", api_key: Optional[str] = "", *, key_in_url: bool = True) -> str:
        """URL of ``feed``; the configured key is put in ``?apiKey=`` unless ``key_in_url`` is false
        (``api_key=None`` or ``key_in_url=False``: no key in the URL; a string: that key)."""
        scheme = "wss" if self.config.ssl_context is not None else "ws"
        u = f"{scheme}://{self.config.host}:{self.port}{FEEDS[feed].simulator_path}"
        key = self.config.api_key if api_key == "" else api_key
        if key_in_url and key is not None and feed != "sfox":
            u += "?apiKey=" + urllib.parse.quote(key, safe="")
        return u

    def urls(self) -> dict[str, str]:
        return {f: self.url(f, api_key=None) for f in CONNECTIONS}

    def sent_bars(self, feed: Optional[str] = None) -> np.ndarray:
        """Every bar sent on every connection (optionally of one feed), connection by connection."""
        parts = [c.sent_bars() for c in self.connections if feed is None or c.feed == feed]
        parts = [p for p in parts if len(p)]
        return np.concatenate(parts) if parts else np.empty(0, BAR_DTYPE)
