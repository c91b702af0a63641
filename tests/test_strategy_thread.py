"""StrategyThread: latest-state delivery to a strategy slower than the feed (no network)."""
import itertools
import threading
import time

import numpy as np

from fastfeed.stats import Stats
from fastfeed.strategy_thread import StrategyThread


def test_a_busy_strategy_gets_the_newest_second_and_merged_updates():
    stats = Stats()
    copies = itertools.count()
    seen = []
    entered, release, got_update = threading.Event(), threading.Event(), threading.Event()

    def on_second(T, info):
        seen.append(("second", T, info["skipped"], st.current, threading.current_thread().name))
        if T == 1:
            entered.set()
            assert release.wait(10)

    def on_update(rows, T):
        seen.append(("update", T, rows.tolist(), st.current))
        got_update.set()

    st = StrategyThread(capacity=8, stats=stats, call=lambda name, fn, *a, on_feed_thread: fn(*a),
                        copy_frames=lambda: {"copy": next(copies)}, wake_feed=None, clock=lambda: 3,
                        on_update=on_update, on_second=on_second)
    try:
        st.post_second(1, {}, {"copy": "s1"})
        assert entered.wait(10)  # the strategy is busy with second 1: the feed goes on
        st.post_second(2, {}, {"copy": "s2"})
        st.post_second(3, {}, {"copy": "s3"})  # 2 is dropped: the newest wins
        st.post_update(np.array([1, 2]), 3)
        st.post_update(np.array([5, 2]), 3)   # no copy while the strategy is busy
        release.set()
        # the strategy takes second 3, then waits; the next update is copied at once
        end = time.monotonic() + 10
        while not (len(seen) >= 2 and st._idle):
            assert time.monotonic() < end, "the strategy did not go idle"
            time.sleep(0.005)
        st.post_update(np.array([6]), 3)
        assert got_update.wait(10)
    finally:
        st.stop()
    assert [s[:3] for s in seen[:2]] == [("second", 1, 0), ("second", 3, 1)]
    assert seen[0][3] == {"copy": "s1"} and seen[1][3] == {"copy": "s3"}
    assert seen[0][4] == "fastfeed-strategy"
    assert seen[2] == ("update", 3, [1, 2, 5, 6], {"copy": 0})  # one copy, three updates merged
    assert stats.seconds_skipped == 1 and stats.updates_skipped == 2
    assert st.current is None and not st.thread.is_alive()


def test_pending_updates_ride_along_with_the_next_second():
    stats = Stats()
    seen = []
    entered, release, done = threading.Event(), threading.Event(), threading.Event()

    def on_second(T, info):
        seen.append(("second", T))
        if T == 1:
            entered.set()
            assert release.wait(10)

    def on_update(rows, T):
        seen.append(("update", T, rows.tolist(), st.current))
        done.set()

    st = StrategyThread(capacity=8, stats=stats, call=lambda name, fn, *a, on_feed_thread: fn(*a),
                        copy_frames=lambda: {"copy": "fresh"}, wake_feed=None, clock=lambda: 2,
                        on_update=on_update, on_second=on_second)
    try:
        st.post_second(1, {}, {"copy": "s1"})
        assert entered.wait(10)
        st.post_update(np.array([3]), 2)
        st.post_second(2, {}, {"copy": "s2"})  # the update gets second 2's copy: no extra copy
        release.set()
        assert done.wait(10)
    finally:
        st.stop()
    assert seen == [("second", 1), ("second", 2), ("update", 2, [3], {"copy": "s2"})]
