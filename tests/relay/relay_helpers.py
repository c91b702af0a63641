"""Helpers of the relay tests: a relay and consumers in this process, waits on conditions."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from fastfeed.relay import wire
from fastfeed.relay.harness import make_feed, same_windows, windows_document
from fastfeed.relay.publisher import RelayPublisher, attach_publisher

WINDOWS = (5, 10, 30)
START = 1_700_000_000


async def until(pred: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.02)


class Relay:
    """A Feed on the simulator with a RelayPublisher attached (what `fastfeed relay` runs)."""

    def __init__(self, sim_url: str, nats_url: str, feed: str = "vantafin", **pub_kw: Any) -> None:
        pub_kw.setdefault("heartbeat", 0.5)
        self.pub = RelayPublisher(nats_url, feed, **pub_kw)
        self.events: list[tuple[str, dict]] = []
        self.feed = make_feed(feed, sim_url, windows=WINDOWS, capacity=1024,
                              on_event=lambda k, i: self.events.append((k, i)))

    async def __aenter__(self) -> "Relay":
        await self.pub.start_async()
        attach_publisher(self.feed, self.pub)
        await self.feed.start_async()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.feed.close()
        await self.pub.stop_async(5.0)

    def quiet(self, ms: float = 300) -> bool:
        """The vendor socket delivered nothing for ``ms`` (the simulator has finished)."""
        conn = self.feed._conn
        ln = conn.listener if conn is not None else None
        return ln is not None and ln.idle_ns() > ms * 1e6


class Consumer:
    """``Feed(url="nats://...")``; ``src_kw`` go to its ``NatsSource`` (as
    ``connection_options``); ``src`` is the source once started."""

    def __init__(self, nats_url: str, feed: str = "vantafin", on_update: Any = None, **src_kw: Any) -> None:
        self.events: list[tuple[str, dict]] = []
        src_kw.setdefault("warm_start", 3600.0)
        self.feed = make_feed(feed, nats_url, windows=WINDOWS, capacity=1024, on_update=on_update,
                              on_event=lambda k, i: self.events.append((k, i)), connection_options=src_kw)
        self.src: Any = None

    async def __aenter__(self) -> "Consumer":
        await self.feed.start_async()
        self.src = self.feed._conn
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.feed.close()

    def kinds(self, kind: str) -> list[dict]:
        return [i for k, i in self.events if k == kind]


def sim_done(sim: Any) -> bool:
    """The simulator sent its last second and every producer has finished."""
    return sim.call(lambda s: s.high_water >= s.end_second() - 1 and all(
        c._producer is None or c._producer.done() for c in s.connections))


async def settle(sim: Any, relay: Relay, consumers: list[Consumer], timeout: float = 60.0) -> None:
    """Wait until the simulator finished, the relay read and published everything, and
    every consumer applied all of it."""
    await until(lambda: sim_done(sim) and relay.quiet(), timeout, "simulator finished")
    await until(lambda: relay.pub.buffered_bytes == 0 and relay.pub.acked_through == relay.pub._seq,
                timeout, "relay published everything")
    target = relay.pub.acked_through
    for c in consumers:
        await until(lambda: c.src.epoch == relay.pub.epoch and c.src.relay_seq >= target, timeout,
                    "consumer applied everything")


def assert_same(relay_feed: Any, consumer_feed: Any) -> None:
    a, b = windows_document(relay_feed), windows_document(consumer_feed)
    assert a["windows"][str(WINDOWS[-1])], "no bars at all"
    diffs = same_windows(a, b)
    assert not diffs, diffs


async def stream_entries(url: str, feed: str = "vantafin") -> list[tuple[str, str]]:
    """(subject, Nats-Msg-Id) of every entry of the feed's stream, in stream order."""
    import nats
    from nats.js.api import DeliverPolicy

    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info(wire.stream_name(feed))
    out: list[tuple[str, str]] = []
    sub = await js.subscribe(wire.subjects(feed), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    while len(out) < info.state.messages:
        m = await sub.next_msg(timeout=10)
        out.append((m.subject, m.headers[wire.H_MSG_ID]))
    await nc.close()
    return out


def assert_no_duplicates(entries: list[tuple[str, str]]) -> None:
    ids = [mid for _, mid in entries]
    assert len(ids) == len(set(ids)), "an entry was stored twice"
    last: dict[int, int] = {}
    for mid in ids:  # in stream order, per relay epoch: strictly increasing
        epoch, seq = wire.parse_msg_id(mid)
        assert seq > last.get(epoch, 0), f"{mid} stored out of order"
        last[epoch] = seq
