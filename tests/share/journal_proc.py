"""A feed session with a journal, fed a deterministic stream of Vantafin messages (run
as a script by test_share_journal.py; every stdout line is one JSON object).

    python journal_proc.py DIR --flush-every 50

Message k (k = 0, 1, ...) is a JSON array of bars for second T0 + k // 5 (some of them
corrections of earlier seconds); :func:`message` makes it, here and in the test.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import msgspec
import numpy as np

T0 = 1_700_000_000
TICKERS = [f"J{i:03d}" for i in range(200)]
WINDOWS = (10, 30)


def message(k: int) -> bytes:
    rng = np.random.default_rng(1000 + k)
    sec = T0 + k // 5
    n = 20
    rows = rng.choice(len(TICKERS), n, replace=False)
    secs = np.where(rng.random(n) < 0.9, sec, sec - rng.integers(1, 4, n))
    c = rng.uniform(10, 20, n).round(2)
    h = (c + rng.uniform(0, 1, n)).round(2)
    lo = (c - rng.uniform(0, 1, n)).round(2)
    o = np.minimum(np.maximum(rng.uniform(10, 20, n).round(2), lo), h)
    v = rng.integers(0, 1000, n)
    bars = [{"type": "live_quote_second", "ticker": TICKERS[r], "open": float(o[i]), "high": float(h[i]),
             "low": float(lo[i]), "close": float(c[i]), "volume": float(v[i]), "timestamp": int(secs[i]) * 1000}
            for i, r in enumerate(rows.tolist())]
    return msgspec.json.encode(bars)


def make_session():
    from fastfeed import feeds
    from fastfeed._ext.engine import Engine
    from fastfeed.engine import Stats
    from fastfeed.engine import Universe

    engine = Engine(256, WINDOWS, depth=30, prefault=False)
    universe = Universe(256)
    session = feeds.make_session("vantafin", engine, universe, Stats(), topics=["LS.*"])
    return session, engine, universe


def main() -> int:
    from fastfeed.share.journal import journal_session

    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--flush-every", type=int, default=50, help="0: never flush explicitly")
    a = p.parse_args()
    session, engine, universe = make_session()
    rs, close = journal_session(session, a.dir, "vantafin", "ws://sim", engine=engine)
    writer = rs.writer
    k = 0
    while True:
        ns = time.time_ns()
        rs.on_message(message(k), ns)
        k += 1
        if a.flush_every and k % a.flush_every == 0:
            writer.flush()  # everything up to message k-1 is with the operating system
            print(json.dumps({"event": "flushed", "messages": k, "ns": ns}), flush=True)
        elif not a.flush_every and k % 100 == 0:  # the writer thread alone decides
            print(json.dumps({"event": "progress", "messages": k, "ns": ns}), flush=True)
        time.sleep(0.001)


if __name__ == "__main__":
    sys.exit(main())
