"""What a ``fastfeed bench`` run measures: :class:`BenchConfig`, :class:`Case` and :func:`plan`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["BenchConfig", "Case", "PEER_DIALECT", "SIM_KEY", "plan"]

SIM_KEY = "sim-key"


@dataclass
class BenchConfig:
    """What one ``fastfeed bench`` run measures."""

    quick: bool = False
    tickers: int = 12_000
    bars_per_frame: tuple[int, ...] = (1, 100)
    windows: tuple[int, ...] = (60, 300, 900)
    warmup: float = 1.5  # seconds of each throughput case not measured
    duration: float = 6.0  # seconds measured per throughput case
    interval: float = 0.25  # sampling interval inside the measured span
    speed: float = 10.0  # cadence: simulated seconds per wall second
    bursts: int = 120  # cadence: bursts measured (after skip)
    skip_bursts: int = 3  # cadence: first bursts not measured (warm-up)
    cadence_bars_per_frame: tuple[int, ...] = (100, 1)
    peers: tuple[str, ...] = ("floor", "websockets-json", "massive", "massive-raw")
    #: max-rate rounds of fastfeed and the floor / the official client, alternating (each
    #: ratio is the median of the per-round ratios); websockets-json and massive-raw run once
    rounds: int = 3
    peer_cadence: bool = True  # also measure the peers' burst latency (at speed 1)
    peer_bursts: int = 10
    seed: int = 0
    case_timeout: float = 120.0
    #: a max-rate case whose client did not get its core (contended) is measured again
    retries: int = 2
    #: no retry starts after this many seconds of the run (None: no limit)
    retry_budget_s: Optional[float] = None
    #: the engine steady state beside the decode yardstick (fastfeed.bench.steady), in its
    #: own process after the socket cases: universe sizes (large, small), timed seconds
    steady: bool = True
    steady_rows: tuple[int, ...] = (12_000, 1_000)
    steady_seconds: int = 100
    steady_capacity: int = 16_384

    @classmethod
    def quick_config(cls, **kw: Any) -> "BenchConfig":
        base = dict(quick=True, warmup=0.5, duration=2.0, bursts=30, skip_bursts=2,
                    cadence_bars_per_frame=(100,), peer_bursts=4, case_timeout=30.0, retries=1,
                    retry_budget_s=60.0, steady_seconds=30, rounds=1)
        base.update(kw)
        return cls(**base)


@dataclass
class Case:
    """One measurement: a client on a dialect, in a mode, with a simulator configuration."""

    mode: str  # "throughput" | "cadence"
    client: str  # "fastfeed" | "floor" | "websockets-json" | "massive" | "massive-raw"
    dialect: str  # "vantafin" | "massive"
    bars_per_frame: int
    speed: float = 0.0  # cadence only
    round: int = 0  # max rate: which round of the run (0-based)

    @property
    def label(self) -> str:
        if self.mode == "throughput":
            r = f", round {self.round + 1}" if self.round else ""
            return f"{self.client} [{self.dialect}, {self.bars_per_frame} bars/frame, max rate{r}]"
        return f"{self.client} [{self.dialect}, {self.bars_per_frame} bars/frame, bursts at {self.speed:g}x]"


#: the client each peer is compared with, and on which dialect
PEER_DIALECT = {
    "floor": "vantafin",
    "websockets-json": "vantafin",
    "massive": "massive",
    "massive-raw": "massive",
}


def plan(cfg: BenchConfig) -> list[Case]:
    """The socket cases of a run, fastfeed first for each dialect and frame size.

    The engine steady state (``cfg.steady``) is not a case: :func:`.orchestration.run_bench`
    runs it after them, in its own process.
    """
    cases: list[Case] = []
    peers = [p for p in cfg.peers if p in PEER_DIALECT]
    for r in range(max(1, cfg.rounds)):
        for bpf in cfg.bars_per_frame:
            cases.append(Case("throughput", "fastfeed", "vantafin", bpf, round=r))
            if "floor" in peers:
                cases.append(Case("throughput", "floor", "vantafin", bpf, round=r))
            if "websockets-json" in peers and (bpf == 100 or not cfg.quick) and r == 0:
                cases.append(Case("throughput", "websockets-json", "vantafin", bpf))
        if "massive" in peers or ("massive-raw" in peers and r == 0):
            mbpf = 100 if 100 in cfg.bars_per_frame else cfg.bars_per_frame[-1]
            cases.append(Case("throughput", "fastfeed", "massive", mbpf, round=r))
            for p in ("massive", "massive-raw"):
                if p in peers and (p == "massive" or r == 0):
                    cases.append(Case("throughput", p, "massive", mbpf, round=r))
            if "floor" in peers and "massive" in peers:
                # the decode-only floor of the same A.* stream: how far any msgspec client
                # can go against the official one on this machine (the vs-massive ceiling)
                cases.append(Case("throughput", "floor", "massive", mbpf, round=r))
    for bpf in cfg.cadence_bars_per_frame:
        cases.append(Case("cadence", "fastfeed", "vantafin", bpf, cfg.speed))
        if "floor" in peers:  # the same bursts, decoded only: the burst ratio's denominator
            cases.append(Case("cadence", "floor", "vantafin", bpf, cfg.speed))
    if cfg.peer_cadence:
        for p in ("websockets-json", "massive"):
            if p in peers:
                cases.append(Case("cadence", p, PEER_DIALECT[p], 100, 1.0))
    return cases
