"""The completed-second counting rule stated plainly (sets of rows per second).

``ReferenceCounter`` has the interface of ``fastfeed._ext.seconds.SecondCounter`` and is
what the tests hold that kernel to: slow, obviously right.

* A bar ``(row, s)`` is ignored when ``s > hi``, ``s <= lo`` or ``s <= floor``.
* With no open second, a bar of a second later than the last closed one opens it.
* A bar of a second later than the open one stops the count (the caller closes first).
* A bar of the open second ``T`` is a report of ``T``; any other bar is late.
* ``expected(T)`` = rows that reported (in time or late) in one of ``T-E .. T-1``;
  ``complete`` when every one of them reported ``T`` and there is at least one.
"""
from __future__ import annotations

from typing import Sequence


class ReferenceCounter:
    def __init__(self, capacity: int, expect_seconds: int = 3, floor: int = -1) -> None:
        self.capacity = capacity
        self.expect_seconds = expect_seconds
        self.floor = floor
        self.reports: dict[int, set[int]] = {}  # second -> rows with a bar of it (ever)
        self.late_per_second: dict[int, int] = {}
        self.open_s = -1
        self.closed_s = -1
        self.late_bars = 0
        self.late_since = 0
        self.opened = False
        self.saw_open = False

    def feed(self, rows: Sequence[int], seconds: Sequence[int], start: int, n: int, lo: int, hi: int) -> int:
        self.opened = self.saw_open = False
        for i in range(start, n):
            r, s = int(rows[i]), int(seconds[i])
            if s > hi or s <= lo or s <= self.floor or not 0 <= r < self.capacity:
                continue
            if self.open_s < 0 and s > self.closed_s:
                self.open_s = s
                self.opened = True
            if self.open_s >= 0 and s > self.open_s:
                return i
            if s == self.open_s:
                self.saw_open = True
            else:
                self.late_bars += 1
                self.late_since += 1
                self.late_per_second[s] = self.late_per_second.get(s, 0) + 1
            self.reports.setdefault(s, set()).add(r)
        return n

    def close(self) -> None:
        if self.open_s >= 0:
            self.closed_s, self.open_s = self.open_s, -1
            self.late_since = 0

    def _expected_set(self) -> set[int]:
        T, E = self.open_s, self.expect_seconds
        out: set[int] = set()
        for s in range(T - E, T):
            out |= self.reports.get(s, set())
        return out

    @property
    def reported(self) -> int:
        return len(self.reports.get(self.open_s, ())) if self.open_s >= 0 else 0

    def expected(self) -> int:
        return len(self._expected_set()) if self.open_s >= 0 else 0

    def outstanding(self) -> int:
        if self.open_s < 0:
            return 0
        return len(self._expected_set() - self.reports.get(self.open_s, set()))

    def complete(self) -> bool:
        return self.open_s >= 0 and self.expected() > 0 and self.outstanding() == 0

    def late_of(self, s: int) -> int:
        return self.late_per_second.get(s, 0)
