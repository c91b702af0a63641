"""``fastfeed bench``: fastfeed and its peers on the same simulated market (docs/BENCHMARKS.md).

* :mod:`.planning` — what a run measures (:class:`BenchConfig`, :class:`Case`, :func:`plan`);
* :mod:`.orchestration` — the runner: a simulator and a worker process per case, pinned;
* :mod:`.worker` — one client measured in its own process (``python -m fastfeed.bench.worker``);
* :mod:`.peers` — the peer clients (websockets + json, the official ``massive`` client, and
  the picows + msgspec decode-only floor);
* :mod:`.report` — table, JSON and PNG output.

The command itself is :mod:`fastfeed.cli.bench`.
"""
