"""``fastfeed bench --seconds``: what the completed-second rule costs.

For each second ``T`` announced by ``on_second`` it records, against the receive time of
the last message that carried ``T``'s bars (the burst's last message):

* ``update_us``: until the end of the engine update of that read (what a client that
  could tell the burst was over would wait);
* ``second_us``: until ``on_second(T, ...)`` was called (``info["since_last_bar_us"]``).

The difference is the rule's cost: nothing beyond the update when every expected
instrument reported (``complete``), ``second_quiet_ms`` when some never do (``quiet``).
The simulator runs in its own process, at ``speed`` simulated seconds per wall second.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

import numpy as np

__all__ = ["run_second_bench", "render"]


def _pct(values: Sequence[float]) -> dict[str, float | None]:
    if not len(values):
        return {"p50": None, "p99": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


async def _measure(url: str, *, windows: tuple[int, ...], seconds: int, skip: int, quiet_ms: float,
                   expect_seconds: int, timeout: float) -> dict[str, Any]:
    from ..feed import Feed

    update_end: dict[int, float] = {}  # clock T -> µs from the batch's last message to the update's end
    rows: list[tuple[int, str, float, float | None]] = []

    def on_second(T: int, info: dict) -> None:
        rows.append((T, info["reason"], info["since_last_bar_us"], update_end.get(T)))

    feed = Feed("vantafin", url=url, windows=windows, on_second=on_second,
                second_quiet_ms=quiet_ms, expect_seconds=expect_seconds)
    cb = feed._callbacks
    assert cb is not None
    filler = feed.session.filler
    inner = cb.on_batch

    def on_batch(r: np.ndarray, T: int) -> None:  # runs right after each engine update
        update_end[T] = (time.time_ns() - filler.batch_last_ns) / 1e3
        inner(r, T)

    feed.session.set_on_batch(on_batch)
    async with feed:
        await feed.wait_connected(30)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(rows) < skip + seconds:
            if loop.time() > end:
                raise TimeoutError(f"{len(rows)} of {skip + seconds} seconds announced within {timeout} s")
            await asyncio.sleep(0.05)
        stats = feed.stats_dict()
    got = rows[skip:skip + seconds]
    reasons = {r: sum(1 for _, why, _, _ in got if why == r) for r in ("complete", "quiet", "next")}
    second_us = [s for _, _, s, _ in got]
    update_us = [u for _, _, _, u in got if u is not None]
    cost = [s - u for _, _, s, u in got if u is not None]
    return {"seconds": len(got), "reasons": reasons, "second_us": _pct(second_us), "update_us": _pct(update_us),
            "rule_cost_us": _pct(cost), "reconnects": stats["reconnects"], "late_bars": stats["late_bars"]}


def run_second_bench(*, tickers: int = 12_000, trade_fractions: Sequence[float] = (1.0, 0.5), speed: float = 10.0,
                     seconds: int = 30, skip: int = 4, bars_per_frame: int = 100,
                     windows: tuple[int, ...] = (60, 300, 900), quiet_ms: float = 20.0, expect_seconds: int = 3,
                     seed: int = 0) -> dict[str, Any]:
    """Run the benchmark for each trade fraction (1.0: every ticker every second, the rule
    completes; below 1: some expected tickers never report, the rule waits for ``quiet``)."""
    from ..simulator.testing import SimProcess

    out: dict[str, Any] = {
        "tickers": tickers, "speed": speed, "bars_per_frame": bars_per_frame, "windows": list(windows),
        "second_quiet_ms": quiet_ms, "expect_seconds": expect_seconds, "cases": [],
    }
    for tf in trade_fractions:
        args = ["--tickers", str(tickers), "--trade-fraction", str(tf), "--speed", str(speed),
                "--bars-per-frame", str(bars_per_frame), "--seed", str(seed)]
        with SimProcess(args) as sim:
            r = asyncio.run(_measure(sim.url("vantafin"), windows=windows, seconds=seconds, skip=skip,
                                     quiet_ms=quiet_ms, expect_seconds=expect_seconds,
                                     timeout=60 + 3 * (seconds + skip) / speed))
        r["trade_fraction"] = tf
        out["cases"].append(r)
    return out


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x / 1e3:.2f} ms"


def render(doc: dict[str, Any]) -> str:
    """The result as a text table."""
    lines = [f"completed second: {doc['tickers']:,} tickers, speed {doc['speed']:g}, {doc['bars_per_frame']} bars/frame, "
             f"windows {','.join(map(str, doc['windows']))}, second_quiet_ms {doc['second_quiet_ms']:g}, "
             f"expect_seconds {doc['expect_seconds']}"]
    lines.append(f"{'trade fraction':>14}  {'reasons (complete/quiet/next)':>29}  {'':<34}{'p50':>10}{'p99':>10}")
    for c in doc["cases"]:
        r = c["reasons"]
        head = f"{c['trade_fraction']:>14g}  {r['complete']:>13}/{r['quiet']}/{r['next']:<13}"
        for i, (label, key) in enumerate((("last message -> engine update done", "update_us"),
                                          ("last message -> on_second", "second_us"),
                                          ("difference (the rule's cost)", "rule_cost_us"))):
            p = c[key]
            lines.append(f"{head if i == 0 else ' ' * len(head)}  {label:<34}{_ms(p['p50']):>10}{_ms(p['p99']):>10}")
    return "\n".join(lines) + "\n"
