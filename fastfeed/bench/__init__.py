"""``fastfeed bench``: fastfeed and its peers on the same simulated market (docs/BENCHMARKS.md).

* :mod:`fastfeed.bench.harness` — the runner (simulator and clients in separate, pinned processes);
* :mod:`fastfeed.bench.peers` — the peer clients (websockets + json, the official ``massive``
  client, and the picows + msgspec decode-only floor);
* :mod:`fastfeed.bench.report` — table, JSON and PNG output;
* :mod:`fastfeed.bench.cli` — ``add_bench_parser(subparsers)`` for ``fastfeed bench``.
"""
from __future__ import annotations

__all__ = ["harness", "peers", "report", "cli"]
