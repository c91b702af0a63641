"""The benchmark peers still work against the simulator (opt-in: ``pytest -m peers``).

Needs the ``bench`` extra (``websockets``, ``massive``).  Each peer connects to a simulator
subprocess unchanged, authenticates, subscribes, and processes bars; the official
``massive`` client is pointed at the simulator's Massive dialect (``ws://HOST:PORT/stocks``)
through its ``feed``/``secure`` options only.  No timing is asserted.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from fastfeed.bench import peers as P

pytestmark = pytest.mark.peers

N_TICKERS = 50


@pytest.fixture(autouse=True)
def _opt_in(request):
    if "peers" not in (request.config.getoption("-m") or ""):
        pytest.skip("benchmark peers are opt-in: pytest -m peers")


@pytest.fixture(scope="module")
def simproc():
    from fastfeed.simulator.testing import SimProcess

    with SimProcess(["--tickers", str(N_TICKERS), "--trade-fraction", "1", "--speed", "20",
                     "--bars-per-frame", "10"], api_key="peer-key") as sp:
        yield sp


def _run(fn, url, seconds=1.5, **kw):
    meter = P.Meter()
    seen: list[tuple[int, int, int]] = []

    async def main():
        stop = asyncio.Event()
        task = asyncio.ensure_future(fn(url, meter, stop, api_key="peer-key",
                                        on_batch=lambda T, n, ns: seen.append((T, n, ns)), **kw))
        deadline = time.monotonic() + 20
        while meter.bars < 3 * N_TICKERS and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    return meter, seen


def test_websockets_json_peer(simproc):
    pytest.importorskip("websockets")
    meter, seen = _run(P.run_websockets_json, simproc.urls["vantafin"])
    assert meter.bars >= 3 * N_TICKERS
    assert meter.extra["tickers"] == N_TICKERS
    assert seen and all(n > 0 for _, n, _ in seen)
    Ts = [T for T, _, _ in seen]
    assert Ts == sorted(Ts)


@pytest.mark.parametrize("aggregate", [True, False], ids=["aggregate", "raw"])
def test_official_massive_client_peer(simproc, aggregate):
    pytest.importorskip("massive")
    meter, seen = _run(P.run_massive, simproc.urls["massive"], aggregate=aggregate)
    assert meter.bars >= 3 * N_TICKERS
    if aggregate:
        assert meter.extra["tickers"] == N_TICKERS
    assert seen


def test_massive_client_auth_failure_is_reported(simproc):
    pytest.importorskip("massive")

    async def main():
        stop = asyncio.Event()
        await asyncio.wait_for(P.run_massive(simproc.urls["massive"], P.Meter(), stop, api_key="wrong"), 10)

    with pytest.raises(Exception) as ei:
        asyncio.run(main())
    assert "auth" in repr(ei.value).lower()


@pytest.mark.parametrize("dialect", ["vantafin", "massive"])
def test_floor_peer(simproc, dialect):
    meter, seen = _run(P.run_floor, simproc.urls[dialect], dialect=dialect)
    assert meter.bars >= 3 * N_TICKERS
    assert meter.errors == 0
    # on_batch: every decoded bar reported once, by second (epoch seconds, not ms), in order
    assert sum(n for _, n, _ in seen) == meter.bars
    Ts = [T for T, _, _ in seen]
    assert Ts == sorted(Ts) and 1_000_000_000 < Ts[0] < 10_000_000_000
    assert len(set(Ts)) >= 3
