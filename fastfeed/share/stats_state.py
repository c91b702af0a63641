"""A ``Stats`` object as plain JSON-able data and back: how the stats cross the segment.

The writer stores :func:`stats_state` of its ``Stats`` (every attribute, whatever later
issues add) as JSON in the segment; a reader rebuilds an equal ``Stats`` with
:func:`stats_from_state` and calls its own ``as_dict()``, so the reader's stats
document is the writer's, computed by the same code.  Latency histograms travel in
HdrHistogram's standard compressed encoding (exact counts).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from hdrh.histogram import HdrHistogram

from ..engine.stats import Stats

__all__ = ["StateEncoder", "stats_from_state", "apply_counters"]


class StateEncoder:
    """:meth:`encode` gives the state of one ``Stats``; histograms whose total count did
    not change since the last call are not re-encoded (encoding one costs ~0.2-1 ms)."""

    def __init__(self) -> None:
        self._hdr_cache: dict[str, tuple[int, int, str]] = {}

    def encode(self, stats: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, v in vars(stats).items():
            if name.startswith("_"):
                continue
            if v is None or isinstance(v, (bool, int, float, str)):
                out[name] = {"v": v}
            elif isinstance(v, HdrHistogram):
                out[name] = {"hdr": self._hdr(name, v)}
            elif isinstance(v, dict) and v and all(isinstance(x, HdrHistogram) for x in v.values()):
                out[name] = {"hdrs": {str(k): self._hdr(f"{name}.{k}", h) for k, h in v.items()}}
            elif isinstance(v, dict):
                out[name] = {"counter" if isinstance(v, Counter) else "dict": {str(k): x for k, x in v.items()}}
            elif isinstance(v, (list, tuple)):
                out[name] = {"tuples" if v and all(isinstance(x, tuple) for x in v) else "list":
                             [list(x) if isinstance(x, tuple) else x for x in v]}
        return out

    def _hdr(self, name: str, h: HdrHistogram) -> str:
        key = (h.get_total_count(), h.get_max_value())
        cached = self._hdr_cache.get(name)
        if cached is not None and cached[:2] == key:
            return cached[2]
        enc = h.encode()
        text = enc.decode() if isinstance(enc, bytes) else str(enc)
        self._hdr_cache[name] = (*key, text)
        return text


def stats_from_state(state: dict[str, Any], counters: dict[str, int] | None = None) -> Stats:
    """A ``Stats`` equal to the one :meth:`StateEncoder.encode` saw; ``counters`` (newer
    values of its integer attributes) override the state's."""
    s = Stats()
    for name, item in state.items():
        if "v" in item:
            setattr(s, name, item["v"])
        elif "hdr" in item:
            setattr(s, name, HdrHistogram.decode(item["hdr"]))
        elif "hdrs" in item:
            setattr(s, name, {k: HdrHistogram.decode(x) for k, x in item["hdrs"].items()})
        elif "counter" in item:
            setattr(s, name, Counter(item["counter"]))
        elif "dict" in item:
            setattr(s, name, dict(item["dict"]))
        elif "tuples" in item:
            setattr(s, name, [tuple(x) for x in item["tuples"]])
        elif "list" in item:
            setattr(s, name, list(item["list"]))
    apply_counters(s, counters or {})
    return s


def apply_counters(stats: Any, counters: dict[str, int]) -> None:
    """Set the integer attributes of ``stats`` named in ``counters`` (others are ignored)."""
    for name, v in counters.items():
        if type(getattr(stats, name, None)) is int:
            setattr(stats, name, v)
