"""How long the user's callbacks take, and how far the feed lags behind its own clock.

* **Callback durations**: every call a :class:`LagMonitor` makes (``call``) is timed into
  ``stats.callback_time[name]`` (µs, an HDR histogram per callback); so is a plain
  ``on_update`` the filler calls itself (timed in C by the filler's
  ``fastfeed._ext.decode.LagClock``, moved into ``stats`` by :meth:`LagMonitor.flush_into`).
* **Lag**: per engine update (measured in C by the ``LagClock``), ``now - end of the clock's second`` (how old the newest bar
  being processed is) minus the smallest such value seen on this feed.  The minimum is
  the feed's own delivery delay (network, burst spread, clock offset between the vendor
  and this machine), so the difference is the time the process is *behind*: data waiting
  in the socket (or at the sender) because the thread that reads it was busy.  (When a
  message reached the socket is not visible to a TCP reader in user space; this is its
  effect on the bar clock.)  ``clock_rate`` is the feed's seconds per wall second (1 for
  a live feed; ``k`` for a replay or a simulator at speed ``k``); ``spread_s`` is how
  much of a second the bars of one second arrive over (sFOX updates arrive during their
  second: 1 s), subtracted so that an on-time feed reads 0.
* A **warning** (logged, at most once per ``interval`` seconds, and an ``on_event("lag",
  info)``) when the lag passes ``lag_warn_s``; it names the callback when callbacks took
  at least half of the feed thread's time over the last seconds.
"""
from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from typing import Any, Callable

from hdrh.histogram import HdrHistogram

from .._ext.decode import LagClock
from ..log import RateLimitedLog

__all__ = ["LagMonitor", "callback_name"]

log = logging.getLogger("fastfeed")

#: the callbacks' share of the feed thread above which they are named as the lag's cause
CAUSE_SHARE = 0.5
#: time constant (ns) of the exponentially weighted share of the feed thread's time
SHARE_TAU_NS = 2_000_000_000


def callback_name(kind: str, fn: Any) -> str:
    """``on_update (mymodule.my_strategy)``: what a log line calls a user's callback."""
    if fn is None:
        return kind
    qual = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    mod = getattr(fn, "__module__", None)
    return f"{kind} ({mod}.{qual})" if mod and mod != "__main__" else f"{kind} ({qual})"


class LagMonitor:
    """Times callbacks and words the lag warning (see the module); one per feed.

    :param stats: the feed's ``Stats``.
    :param warn_s: ``lag_warn_s``: warn when the lag passes this many seconds.
    :param emit: ``emit(kind, info)``: the feed's event callback (gets ``"lag"``).
    :param clock_rate: the feed's seconds per wall second (see the module).
    :param spread_s: how long the bars of one second take to arrive (see the module).
    """

    def __init__(self, stats: Any, warn_s: float = 1.0, emit: Callable[[str, dict], None] | None = None,
                 interval: float = 5.0, logger: logging.Logger = log, *, clock_rate: float = 1.0,
                 spread_s: float = 0.0) -> None:
        if warn_s <= 0:
            raise ValueError("lag_warn_s must be > 0")
        if clock_rate <= 0:
            raise ValueError("clock_rate must be > 0")
        self.stats = stats
        self.warn_s = float(warn_s)
        #: the C measurement (an engine update's lag, a plain on_update's duration)
        self.clock = LagClock(float(clock_rate), float(spread_s), float(warn_s))
        self.clock.on_lag = self._warn
        self._emit = emit
        self._log = RateLimitedLog(logger, interval)
        self._errors = RateLimitedLog(logger, interval)
        self._lock = threading.Lock()  # callback histograms: written by the strategy thread too
        # feed-thread time spent in each callback, exponentially weighted (ns, tau SHARE_TAU_NS)
        self._busy: dict[str, float] = {}
        self._per_call: dict[str, float] = {}  # the latest call's duration, ms
        self._busy_at = time.perf_counter_ns()
        self._busy_since: int | None = None  # the first call (the weights' start)
        self._c_name = "on_update"  # what the clock's timed on_batch calls are
        self._c_seen = 0            # clock.callback_ns already counted in _busy

    @property
    def lag_ns(self) -> int:
        """The latest lag (ns)."""
        return int(self.clock.lag_ns)

    # ------------------------------------------------------------------ wiring
    def attach(self, filler: Any, update_name: str) -> None:
        """Measure the lag after every engine update of ``filler`` (a ``BarFiller``), and time
        its ``on_batch`` as ``update_name`` (the user's ``on_update``) until :meth:`time_in_c`
        says otherwise; what ``on_batch`` raises is counted and logged, not raised."""
        self._c_name = update_name
        self.time_in_c(True)
        filler.lag = self.clock

    def time_in_c(self, on: bool) -> None:
        """Whether the filler's ``on_batch`` is the user's own function, timed there and its
        errors counted as the callback's (off when it is a runner that times the user's
        callbacks with :meth:`call`: what the runner raises is then an internal error)."""
        self._pull()
        self.clock.time_calls = bool(on)
        self.clock.on_error = self._c_failed if on else None

    def _c_failed(self, exc: BaseException) -> None:
        self.failed(self._c_name, exc)

    def _pull(self) -> None:
        """Add the feed-thread time the filler measured since the last pull to the shares."""
        c = self.clock
        d = c.callback_ns - self._c_seen
        if d <= 0:
            return
        self._c_seen = c.callback_ns
        now = time.perf_counter_ns()
        if self._busy_since is None:
            self._busy_since = now - d
        self._decay(now)
        self._busy[self._c_name] = self._busy.get(self._c_name, 0.0) + d
        self._per_call[self._c_name] = c.last_call_ns / 1e6

    # ------------------------------------------------------------------ callbacks
    def call(self, name: str, fn: Callable[..., Any], *args: Any, on_feed_thread: bool = True) -> None:
        """``fn(*args)``, timed; an exception is counted and logged (rate-limited), not raised."""
        t0 = time.perf_counter_ns()
        try:
            fn(*args)
        except Exception as e:
            self.failed(name, e)
        t1 = time.perf_counter_ns()
        d = t1 - t0
        with self._lock:
            h = self.stats.callback_time.get(name)
            if h is None:
                h = self.stats.callback_time[name] = HdrHistogram(1, 3_600_000_000, 3)
            h.record_value(min(max(d // 1000, 1), 3_600_000_000))
        if on_feed_thread:
            if self._busy_since is None:
                self._busy_since = t0
            self._decay(t1)
            self._busy[name] = self._busy.get(name, 0.0) + d
            self._per_call[name] = d / 1e6

    def failed(self, name: str, exc: BaseException) -> None:
        """A user's callback raised: count it (``stats.callback_errors``), log it (rate-limited)."""
        self.stats.callback_errors += 1
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        self._errors(name, "%s raised (the feed goes on):\n%s", name, tb, level=logging.ERROR)

    def _decay(self, now_pc: int) -> None:
        dt = now_pc - self._busy_at
        if dt > 0:
            f = math.exp(-dt / SHARE_TAU_NS)
            for k in self._busy:
                self._busy[k] *= f
            self._busy_at = now_pc

    def shares(self) -> dict[str, float]:
        """Each callback's share of the feed thread's time over the last few seconds."""
        self._pull()
        now = time.perf_counter_ns()
        self._decay(now)
        if self._busy_since is None:
            return {}
        # the weights of the time since the first call (all of it, early on)
        span = SHARE_TAU_NS * -math.expm1(-max(now - self._busy_since, 1) / SHARE_TAU_NS)
        return {k: min(1.0, v / span) for k, v in self._busy.items()}

    # ------------------------------------------------------------------ lag
    def observe(self, T: int, now_ns: int) -> None:
        """One engine update with clock ``T`` processed at ``now_ns`` (epoch ns): the lag
        (the filler does this itself once :meth:`attach` ed)."""
        self.clock.observe(T, now_ns)

    def _warn(self, lag_ns: int) -> None:
        shares = self.shares()
        total = sum(shares.values())
        info: dict[str, Any] = {"lag_s": lag_ns / 1e9, "callback": None, "callback_share": round(total, 3)}
        if shares and total >= CAUSE_SHARE:
            top = max(shares, key=shares.__getitem__)
            info["callback"] = top
            said = self._log(
                "lag",
                "fastfeed: the feed is %.1f s behind (lag_warn_s=%g): %s is the cause: it took %.0f%% of "
                "the feed thread's time lately (%.0f ms per call), and the socket is not read meanwhile "
                "(a vendor drops a slow consumer). Make it faster, or run it with Feed(strategy_thread=True)",
                lag_ns / 1e9, self.warn_s, top, 100 * shares[top], self._per_call.get(top, 0.0))
        else:
            said = self._log(
                "lag",
                "fastfeed: the feed is %.1f s behind (lag_warn_s=%g); callbacks took %.0f%% of the feed "
                "thread's time lately: the process or the machine is too slow for this feed",
                lag_ns / 1e9, self.warn_s, 100 * total)
        if said and self._emit is not None:
            self._emit("lag", info)

    def flush_into(self, stats: Any) -> None:
        """Move the buffered lag values (and a plain on_update's durations) into ``stats``
        (the feed's thread only)."""
        self.clock.lag_us.flush_into(stats.lag)
        if self.clock.callback_us.pending:
            with self._lock:
                h = stats.callback_time.get(self._c_name)
                if h is None:
                    h = stats.callback_time[self._c_name] = HdrHistogram(1, 3_600_000_000, 3)
                self.clock.callback_us.flush_into(h)
