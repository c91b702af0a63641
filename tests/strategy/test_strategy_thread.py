"""StrategyThread: latest-state delivery to a strategy slower than the feed (no network)."""
import itertools
import threading
import time

import numpy as np

from fastfeed.engine import Stats
from fastfeed.strategy.thread import StrategyThread


class Strategy:
    """Records its calls; the call for second 1 blocks until ``release`` (a busy strategy)."""

    def __init__(self, copy_frames):
        self.stats = Stats()
        self.seen = []
        self.entered, self.release, self.got_update = threading.Event(), threading.Event(), threading.Event()
        self.thread = StrategyThread(
            capacity=8, stats=self.stats, call=lambda name, fn, *a, on_feed_thread: fn(*a),
            copy_frames=copy_frames, wake_feed=None, clock=lambda: 3,
            on_update=self.on_update, on_second=self.on_second)

    def on_second(self, T, info):
        self.seen.append(("second", T, info["skipped"], self.thread.current, threading.current_thread().name))
        if T == 1:
            self.entered.set()
            assert self.release.wait(10)

    def on_update(self, rows, T):
        self.seen.append(("update", T, rows.tolist(), self.thread.current))
        self.got_update.set()


def test_a_busy_strategy_gets_the_newest_second_and_merged_updates():
    copies = itertools.count()
    s = Strategy(lambda: {"copy": next(copies)})
    st = s.thread
    try:
        st.post_second(1, {}, {"copy": "s1"})
        assert s.entered.wait(10)  # the strategy is busy with second 1: the feed goes on
        st.post_second(2, {}, {"copy": "s2"})
        st.post_second(3, {}, {"copy": "s3"})  # 2 is dropped: the newest wins
        st.post_update(np.array([1, 2]), 3)
        st.post_update(np.array([5, 2]), 3)   # no copy while the strategy is busy
        s.release.set()
        # the strategy takes second 3, then waits; the next update is copied at once
        end = time.monotonic() + 10
        while not (len(s.seen) >= 2 and st._idle):
            assert time.monotonic() < end, "the strategy did not go idle"
            time.sleep(0.005)
        st.post_update(np.array([6]), 3)
        assert s.got_update.wait(10)
    finally:
        st.stop()
    seen = s.seen
    assert [x[:3] for x in seen[:2]] == [("second", 1, 0), ("second", 3, 1)]
    assert seen[0][3] == {"copy": "s1"} and seen[1][3] == {"copy": "s3"}
    assert seen[0][4] == "fastfeed-strategy"
    assert seen[2] == ("update", 3, [1, 2, 5, 6], {"copy": 0})  # one copy, three updates merged
    assert s.stats.seconds_skipped == 1 and s.stats.updates_skipped == 2
    assert st.current is None and not st.thread.is_alive()


def test_pending_updates_ride_along_with_the_next_second():
    s = Strategy(lambda: {"copy": "fresh"})
    st = s.thread
    try:
        st.post_second(1, {}, {"copy": "s1"})
        assert s.entered.wait(10)
        st.post_update(np.array([3]), 2)
        st.post_second(2, {}, {"copy": "s2"})  # the update gets second 2's copy: no extra copy
        s.release.set()
        assert s.got_update.wait(10)
    finally:
        st.stop()
    assert [x[:2] for x in s.seen] == [("second", 1), ("second", 2), ("update", 2)]
    assert s.seen[2][2:] == ([3], {"copy": "s2"})
