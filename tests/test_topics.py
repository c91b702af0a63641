"""A string of topics is one comma-separated list, in ``Feed(subscribe=...)``,
``feed.subscribe`` / ``feed.unsubscribe`` and ``--subscribe`` alike."""
from __future__ import annotations

import asyncio
import time

import pytest

from fastfeed import Feed


@pytest.mark.parametrize("given, topics", [
    ("LS.AAPL", ["LS.AAPL"]),
    ("LS.AAPL,LS.MSFT", ["LS.AAPL", "LS.MSFT"]),
    (" LS.AAPL , ,LS.MSFT ", ["LS.AAPL", "LS.MSFT"]),
    (["LS.AAPL,LS.MSFT", "LS.TSLA"], ["LS.AAPL", "LS.MSFT", "LS.TSLA"]),
    (("LS.*",), ["LS.*"]),
])
def test_topic_list(given, topics):
    from fastfeed.feeds import topic_list

    assert topic_list(given) == topics


def test_a_string_subscribe_is_one_topic_list(sim):
    feed = Feed("vantafin", url=sim.url("vantafin"), subscribe="LS.AAPL,LS.MSFT", windows=(60,))
    assert feed.topics == ("LS.AAPL", "LS.MSFT")
    assert feed.session.topics == ("LS.AAPL", "LS.MSFT")


def test_feed_subscribe_and_unsubscribe_take_a_string_while_connected(sim):
    assert {"AAPL", "MSFT", "NVDA"} <= set(sim.sim.market.tickers)

    async def until(pred, timeout=30.0):
        end = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < end, "condition not reached in time"
            await asyncio.sleep(0.02)

    async def main():
        async with Feed("vantafin", url=sim.url("vantafin"), subscribe="LS.AAPL", windows=(60,)) as feed:
            await feed.wait_connected(10)
            await until(lambda: "AAPL" in feed.universe.index and feed.stats.bars > 0)
            feed.subscribe("LS.MSFT,LS.NVDA")
            assert feed.topics == ("LS.AAPL", "LS.MSFT", "LS.NVDA")
            await until(lambda: {"MSFT", "NVDA"} <= set(feed.universe.index))
            feed.unsubscribe("LS.AAPL,LS.NVDA")
            assert feed.topics == ("LS.MSFT",) and feed.session.topics == ("LS.MSFT",)
            return feed

    feed = asyncio.run(main())
    assert set(feed.universe.symbols) == {"AAPL", "MSFT", "NVDA"}  # nothing else was subscribed
