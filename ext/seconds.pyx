# cython: language_level=3
"""Report counting for the completed-second rule (driven by ``fastfeed.engine.seconds.SecondTracker``).

One :class:`SecondCounter` follows the bars an engine accepted, update by update, and
keeps what the rule needs to read in O(1):

* per row: ``last[r]``, the latest second the row reported (-1: never), and ``hit[r]``,
  the open second in which the row was counted as expected;
* per second, in a ring of ``R`` slots (a power of two above ``expect_seconds + 1``)
  holding the seconds ``top - R < s <= top``: how many rows have ``s`` as their latest
  report (``nlast``) and how many late bars ``s`` received.

For the open second ``T``:

* ``reported`` = rows with a bar of ``T``;
* ``expected`` = rows with a report in ``T - E .. T - 1`` = ``hits`` (those among them
  that reported ``T``) + ``outstanding`` (those that have not: rows whose latest report
  lies in that range, the sum of ``E`` ring slots);
* complete when ``outstanding == 0`` and ``expected > 0``.

Each bar costs a few array accesses; the loop runs without the GIL. A plain-Python
statement of the same rule is ``fastfeed.engine.seconds_reference.ReferenceCounter``.
"""
from libc.stdint cimport int64_t, INT64_MIN

import numpy as np


cdef class SecondCounter:
    """Counts reports per second for the open second and the expected set.

    :param capacity: rows (as the engine's).
    :param expect_seconds: ``E``: a row is expected in ``T`` when it reported in one of
        the ``E`` seconds before ``T``.
    :param floor: bars of seconds ``<= floor`` are ignored (e.g. the clock when the
        counting started: its second was already under way).
    """
    cdef readonly Py_ssize_t capacity
    cdef readonly int64_t expect_seconds, ring
    cdef int64_t mask
    cdef int64_t[::1] last, hit, nlast, late, slot_s
    cdef readonly object last_array
    cdef readonly int64_t floor
    cdef readonly int64_t open_s       # the open second (-1: none)
    cdef readonly int64_t closed_s     # the last second closed (announced); -1: none
    cdef readonly int64_t reported, hits
    cdef readonly int64_t late_bars    # bars of seconds already closed (or never opened), in all
    cdef readonly int64_t late_since   # ... since the last close
    cdef readonly bint opened          # the last feed() opened a second
    cdef readonly bint saw_open        # the last feed() had a bar of the open second

    def __init__(self, Py_ssize_t capacity, int64_t expect_seconds=3, int64_t floor=-1):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if expect_seconds < 1:
            raise ValueError("expect_seconds must be >= 1")
        cdef int64_t R = 8
        while R < expect_seconds + 2:
            R *= 2
        self.capacity = capacity
        self.expect_seconds = expect_seconds
        self.ring = R
        self.mask = R - 1
        self.last_array = np.full(capacity, -1, dtype=np.int64)
        self.last = self.last_array
        self.hit = np.full(capacity, -1, dtype=np.int64)
        self.nlast = np.zeros(R, dtype=np.int64)
        self.late = np.zeros(R, dtype=np.int64)
        self.slot_s = np.full(R, INT64_MIN, dtype=np.int64)
        self.floor = floor
        self.open_s = -1
        self.closed_s = -1
        self.reported = 0
        self.hits = 0
        self.late_bars = 0
        self.late_since = 0
        self.opened = False
        self.saw_open = False

    cdef inline bint _held(self, int64_t s) noexcept nogil:
        return s >= 0 and self.slot_s[s & self.mask] == s

    cdef inline void _move(self, Py_ssize_t r, int64_t p, int64_t s) noexcept nogil:
        """Row ``r``'s latest report moves from ``p`` to the later ``s``."""
        if self._held(p):
            self.nlast[p & self.mask] -= 1
        if self._held(s):
            self.nlast[s & self.mask] += 1
        self.last[r] = s

    cdef void _open(self, int64_t s) noexcept nogil:
        """Open second ``s`` (later than every second seen): the ring moves up to it."""
        cdef int64_t top = self.closed_s, x, first = s - self.ring + 1
        if top >= 0 and top + 1 > first:
            first = top + 1
        x = first
        while x <= s:
            self.nlast[x & self.mask] = 0
            self.late[x & self.mask] = 0
            self.slot_s[x & self.mask] = x
            x += 1
        self.open_s = s
        self.reported = 0
        self.hits = 0
        self.opened = True

    cdef Py_ssize_t _feed(self, const int64_t[:] rows, const int64_t[:] seconds, Py_ssize_t start,
                          Py_ssize_t n, int64_t lo, int64_t hi) noexcept nogil:
        cdef Py_ssize_t i, r
        cdef int64_t s, p, T, E = self.expect_seconds
        for i in range(start, n):
            r = rows[i]
            s = seconds[i]
            if s > hi or s <= lo or s <= self.floor or r < 0 or r >= self.capacity:
                continue
            T = self.open_s
            if T < 0 and s > self.closed_s:
                self._open(s)
                T = s
            if T >= 0 and s > T:
                return i  # a later second: the open one closes first
            p = self.last[r]
            if s == T:
                self.saw_open = True
                if p < s:
                    self.reported += 1
                    if p >= 0 and p >= s - E:
                        self.hits += 1
                        self.hit[r] = s
                    self._move(r, p, s)
                continue
            # a second already closed (or never opened): late
            self.late_bars += 1
            self.late_since += 1
            if self._held(s):
                self.late[s & self.mask] += 1
            if p < s:
                self._move(r, p, s)
            elif T >= 0 and p == T and s >= T - E and self.hit[r] != T:
                # reported T already, and now turns out to belong to T's expected set
                self.hits += 1
                self.hit[r] = T
        return n

    def feed(self, const int64_t[:] rows, const int64_t[:] seconds, Py_ssize_t start, Py_ssize_t n,
             int64_t lo, int64_t hi) -> int:
        """Count the bars ``start .. n-1`` (row, second), in order; bars with a second
        ``> hi`` (not accepted: the engine's clock) or ``<= lo`` (too old) are skipped.

        Opens a second when a bar of a second later than every closed one arrives and none
        is open. Stops at the first bar of a second later than the open one and returns
        its index (the caller closes the open second, then calls again from there);
        returns ``n`` when every bar was counted. Sets :attr:`opened` and :attr:`saw_open`.
        """
        if n > rows.shape[0] or n > seconds.shape[0]:
            raise ValueError("n is larger than the arrays")
        cdef Py_ssize_t i
        self.opened = False
        self.saw_open = False
        with nogil:
            i = self._feed(rows, seconds, start, n, lo, hi)
        return i

    def close(self) -> None:
        """Close the open second (it is announced); its bars from now on are late."""
        if self.open_s >= 0:
            self.closed_s = self.open_s
            self.open_s = -1
            self.late_since = 0

    def outstanding(self) -> int:
        """Rows expected in the open second that have not reported it yet."""
        cdef int64_t x, tot = 0, T = self.open_s
        if T < 0:
            return 0
        for x in range(T - self.expect_seconds, T):
            if self._held(x):
                tot += self.nlast[x & self.mask]
        return tot

    def expected(self) -> int:
        """Size of the open second's expected set (``hits + outstanding``)."""
        return self.hits + self.outstanding() if self.open_s >= 0 else 0

    def complete(self) -> bool:
        """Every expected row reported the open second (and some row was expected)."""
        return self.open_s >= 0 and self.hits > 0 and self.outstanding() == 0

    def late_of(self, int64_t s) -> int:
        """Late bars second ``s`` received so far; -1 when ``s`` left the ring."""
        return self.late[s & self.mask] if self._held(s) else -1
