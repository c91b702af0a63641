"""The completed-second rule: the Cython counter against the plain reference, and the
tracker's announcements in constructed cases (no network: see test_seconds_feed.py)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastfeed._ext.seconds import SecondCounter
from fastfeed.engine.seconds_reference import ReferenceCounter
from fastfeed.engine.seconds import SecondTracker

CAP = 16
NS = 1_000_000  # 1 ms in ns


def _arrays(bars):
    rows = np.array([r for r, _ in bars], dtype=np.int64)
    secs = np.array([s for _, s in bars], dtype=np.int64)
    return rows, secs


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, T, info):
        self.calls.append((T, {k: v for k, v in info.items() if not k.endswith("_us")}))


# a step: an update (bars, lo, hi, waiting_s) or a quiet poll
bar = st.tuples(st.integers(-1, CAP), st.integers(95, 112))
update = st.tuples(st.just("update"), st.lists(bar, max_size=25), st.integers(90, 100), st.integers(100, 115))
before = st.tuples(st.just("before"), st.integers(95, 114), st.integers(0, 30))
quiet = st.tuples(st.just("quiet"))


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.one_of(update, quiet, before), max_size=30), E=st.integers(1, 5),
       floor=st.integers(-1, 97))
def test_counter_matches_the_reference(steps, E, floor):
    fast, ref = Recorder(), Recorder()
    a = SecondTracker(CAP, fast, quiet_ms=1, expect_seconds=E, floor=floor)
    b = SecondTracker(CAP, ref, quiet_ms=1, expect_seconds=E, counter=ReferenceCounter(CAP, E, floor))
    t = 0
    for step in steps:
        t += 10 * NS
        if step[0] == "quiet":
            assert a.poll(t) == b.poll(t)
        elif step[0] == "before":  # received step[2] ms after the previous step
            a.before_second(step[1], t + step[2] * NS)
            b.before_second(step[1], t + step[2] * NS)
        else:
            _, bars, lo, hi = step
            rows, secs = _arrays(bars)
            a.update(rows, secs, len(bars), t, t, lo, hi)
            b.update(rows, secs, len(bars), t, t, lo, hi)
        ka, kb = a.counter, b.counter
        assert (ka.open_s, ka.closed_s, ka.late_bars, ka.late_since) == \
               (kb.open_s, kb.closed_s, kb.late_bars, kb.late_since)
        assert (ka.expected(), ka.outstanding(), ka.complete()) == (kb.expected(), kb.outstanding(), kb.complete())
        if ka.open_s >= 0:
            assert ka.reported == kb.reported
        top = max(ka.open_s, ka.closed_s)
        for s in range(top - E - 1, top + 1):
            if s >= 0 and ka.late_of(s) >= 0:
                assert ka.late_of(s) == kb.late_of(s)
    assert fast.calls == ref.calls
    announced = [T for T, _ in fast.calls]
    assert announced == sorted(set(announced)), "each second once, in order"


def test_complete_when_every_expected_row_reported():
    calls = Recorder()
    tr = SecondTracker(CAP, calls, quiet_ms=20, expect_seconds=3)
    every = list(range(10))
    tr.update(*_arrays([(r, 100) for r in every]), 10, 0, 0, 0, 100)
    assert calls.calls == []  # nothing expected yet: only quiet/next can close the first second
    tr.update(*_arrays([(r, 101) for r in every[:6]]), 6, NS, NS, 0, 101)
    assert [T for T, _ in calls.calls] == [100]
    assert calls.calls[0][1] == {"reason": "next", "reported": 10, "expected": 0, "late_bars": 0}
    tr.update(*_arrays([(r, 101) for r in every[6:]]), 4, 2 * NS, 3 * NS, 0, 101)
    assert calls.calls[1] == (101, {"reason": "complete", "reported": 10, "expected": 10, "late_bars": 0})


def test_quiet_closes_a_second_with_a_missing_row_and_late_bars_are_counted_once():
    calls = []
    tr = SecondTracker(CAP, lambda T, info: calls.append((T, info)), quiet_ms=20, expect_seconds=3)
    tr.update(*_arrays([(r, 100) for r in range(5)]), 5, 0, 0, 0, 100)
    tr.update(*_arrays([(r, 101) for r in range(4)]), 4, 1000 * NS, 1001 * NS, 0, 101)  # row 4 withheld
    assert [T for T, _ in calls] == [100]
    assert tr.deadline_ns() == 1021 * NS
    assert not tr.poll(1020 * NS)
    assert tr.poll(1021 * NS + 5)
    T, info = calls[1]
    assert (T, info["reason"], info["reported"], info["expected"]) == (101, "quiet", 4, 5)
    assert info["latency_us"] == pytest.approx(21_000, abs=1) and info["since_last_bar_us"] == pytest.approx(20_000, abs=1)
    # the withheld bar arrives late, and a correction of row 0: counted, never announced again
    tr.update(*_arrays([(4, 101), (0, 101)]), 2, 1100 * NS, 1100 * NS, 0, 101)
    assert len(calls) == 2 and tr.late_of(101) == 2 and tr.late_bars == 2
    assert not tr.poll(5000 * NS)
    # the next announcement reports the late bars that came since the previous one
    tr.update(*_arrays([(r, 102) for r in range(5)]), 5, 2000 * NS, 2000 * NS, 0, 102)
    assert calls[2][0] == 102 and calls[2][1]["reason"] == "complete" and calls[2][1]["late_bars"] == 2


def test_a_halted_row_leaves_the_expected_set_after_expect_seconds():
    calls = Recorder()
    tr = SecondTracker(CAP, calls, quiet_ms=20, expect_seconds=3)
    t = 0
    for s in range(100, 110):
        rows = range(6) if s < 103 else range(5)  # row 5 halts from second 103 on
        t += 1000 * NS
        tr.update(*_arrays([(r, s) for r in rows]), len(rows), t, t, 0, s)
        tr.poll(t + 30 * NS)
    got = {T: (i["reason"], i["expected"]) for T, i in calls.calls}
    assert got[102] == ("complete", 6)
    assert [got[s] for s in (103, 104, 105)] == [("quiet", 6)] * 3
    assert got[106] == ("complete", 5) and got[109] == ("complete", 5)


def test_next_closes_before_the_waiting_message_and_bars_of_a_skipped_second_are_late():
    calls = Recorder()
    tr = SecondTracker(CAP, calls, quiet_ms=20, expect_seconds=2)
    tr.update(*_arrays([(0, 100), (1, 100), (2, 100)]), 3, 0, 0, 0, 100)
    tr.before_second(100)  # not later than the open second: nothing
    assert calls.calls == []
    tr.before_second(102, 5 * NS)  # received within the quiet time
    assert calls.calls == [(100, {"reason": "next", "reported": 3, "expected": 0, "late_bars": 0})]
    tr.update(*_arrays([(0, 102), (1, 101), (1, 102)]), 3, NS, NS, 0, 102)
    assert tr.open_second == 102 and tr.late_bars == 1  # 101 opened after 102: never announced
    tr.update(*_arrays([(0, 103), (0, 104)]), 2, 2 * NS, 2 * NS, 0, 104)  # one update, two new seconds
    assert [T for T, _ in calls.calls] == [100, 102, 103]
    assert tr.open_second == 104


def test_a_later_second_received_after_the_quiet_deadline_closes_as_quiet():
    calls = Recorder()
    tr = SecondTracker(CAP, calls, quiet_ms=20, expect_seconds=2)
    tr.update(*_arrays([(0, 100)]), 1, 0, 0, 0, 100)
    tr.before_second(101, 20 * NS)  # no timer ran (a replay): the receive time tells
    assert calls.calls[0][1]["reason"] == "quiet"


def test_bars_beyond_the_engine_clock_or_too_old_are_not_counted():
    calls = Recorder()
    tr = SecondTracker(CAP, calls, quiet_ms=20, expect_seconds=2)
    tr.update(*_arrays([(0, 100), (1, 500), (2, 10)]), 3, 0, 0, 40, 100)
    assert tr.open_second == 100 and tr.counter.reported == 1 and tr.late_bars == 0


def test_bars_that_arrive_during_their_second_are_not_closed_by_a_lull_inside_it():
    """sFOX-like (spread 1 s): quiet counts from the end of the second at the earliest."""
    calls = Recorder()
    sec = 1_700_000_100
    tr = SecondTracker(CAP, calls, quiet_ms=20, expect_seconds=3, spread_s=1.0)
    t = sec * 10**9 + 100 * NS  # a pair updates 100 ms into the second
    tr.update(*_arrays([(0, sec)]), 1, t, t, 0, sec)
    assert tr.deadline_ns() == (sec + 1) * 10**9 + 20 * NS
    assert not tr.poll(t + 500 * NS)  # a lull inside the second
    t2 = sec * 10**9 + 700 * NS
    tr.update(*_arrays([(1, sec)]), 1, t2, t2, 0, sec)
    assert tr.poll((sec + 1) * 10**9 + 20 * NS)
    assert calls.calls == [(sec, {"reason": "quiet", "reported": 2, "expected": 0, "late_bars": 0})]
    # a bar stamped far ahead of its receive time waits at most spread_s after it
    tr.update(*_arrays([(0, sec + 5)]), 1, t2, t2, 0, sec + 5)
    assert tr.deadline_ns() == t2 + 10**9 + 20 * NS


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="second_quiet_ms"):
        SecondTracker(CAP, print, quiet_ms=0)
    with pytest.raises(ValueError, match="expect_seconds"):
        SecondTracker(CAP, print, expect_seconds=0)
    with pytest.raises(ValueError, match="larger than the arrays"):
        SecondCounter(CAP).feed(*_arrays([(0, 1)]), 0, 2, -1, 10)
