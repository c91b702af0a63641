"""``Feed(share=NAME)`` in thread mode: every update is published before ``on_update``
runs, a reader sees the feed's own windows, and ``stop()`` removes the segment."""
from __future__ import annotations

import os

import numpy as np
import pytest

from fastfeed import Feed
from fastfeed.errors import SegmentBusy
from fastfeed.share import attach
from fastfeed.share.journal import journal_files
from fastfeed.share.layout import shm_path
from fastfeed.simulator.testing import SimThread

from serve_helpers import wait_for


def test_feed_share_publishes_before_on_update_and_stop_removes_the_segment(shm_name, tmp_path):
    seen: list[bool] = []
    with SimThread(n_tickers=100, trade_fraction=1.0, speed=20.0, bars_per_frame=50, max_seconds=30) as sim:
        reader_box: list = []

        def on_update(rows, T):
            if reader_box:  # the segment already holds this update when the callback runs
                seen.append(reader_box[0].T == T)

        feed = Feed("vantafin", url=sim.url("vantafin"), windows=(10, 30), capacity=256, share=shm_name,
                    on_update=on_update)
        with pytest.raises(SegmentBusy):  # a second writer of the name fails before journaling anything
            Feed("vantafin", url=sim.url("vantafin"), windows=(10, 30), capacity=256, share=shm_name,
                 journal=tmp_path)
        assert journal_files(tmp_path, "vantafin") == []
        reader = attach(shm_name, timeout=10)
        reader_box.append(reader)
        feed.start()
        last = sim.call(lambda s: s.end_second()) - 1
        wait_for(lambda: feed.T == last, 60, "the feed reaches the last second")
        mine = feed.window(30, copy=True)
        wait_for(lambda: reader.T == last, 10, "the reader sees the last second")
        theirs = reader.window(30, copy=True)
        assert list(theirs.symbols) == list(mine.symbols)
        for col in ("open", "high", "low", "close", "volume", "vwap", "count"):
            np.testing.assert_array_equal(getattr(theirs, col), getattr(mine, col))
        feed.stop()
        assert seen and all(seen)
        assert reader.status == "closed" and not os.path.exists(shm_path(shm_name))
        reader.close()


def test_feed_share_publishes_each_completed_second_before_on_second(shm_name):
    """With share= the completed-second rule runs; a reader's ``last_second()`` inside
    ``on_second`` is already that second, with the same info; without ``on_second`` too."""
    with SimThread(n_tickers=100, trade_fraction=1.0, speed=10.0, bars_per_frame=50, max_seconds=30) as sim:
        box: list = []
        agree: list[bool] = []

        def on_second(T, info):
            if box:
                got = box[0].last_second()
                agree.append(got is not None and got[0] == T and got[1]["reason"] == info["reason"]
                             and got[1]["reported"] == info["reported"])

        feed = Feed("vantafin", url=sim.url("vantafin"), windows=(10,), capacity=256, share=shm_name,
                    on_second=on_second)
        reader = attach(shm_name, timeout=10)
        box.append(reader)
        feed.start()
        wait_for(lambda: len(agree) >= 3, 60, "three completed seconds")
        feed.stop()
        assert all(agree)
        reader.close()

    with SimThread(n_tickers=100, trade_fraction=1.0, speed=10.0, bars_per_frame=50, max_seconds=30) as sim:
        feed = Feed("vantafin", url=sim.url("vantafin"), windows=(10,), capacity=256, share=shm_name)
        reader = attach(shm_name, timeout=10)
        feed.start()
        got = reader.wait_second(30)
        assert got is not None and got[0] <= (feed.T or 0) and got[1]["reason"] in ("complete", "quiet", "next")
        feed.stop()
        reader.close()
