"""Type stubs for :mod:`fastfeed._ext.seconds` (ext/seconds.pyx): report counting for the
completed-second rule. Cython types as comments."""
import numpy as np
import numpy.typing as npt

__all__ = ["SecondCounter"]

class SecondCounter:
    capacity: int         # Py_ssize_t, readonly
    expect_seconds: int   # int64_t, readonly
    ring: int             # int64_t, readonly: seconds held per-second counts (power of two)
    floor: int            # int64_t, readonly: bars of seconds <= floor are ignored
    open_s: int           # int64_t, readonly: the open second, -1 none
    closed_s: int         # int64_t, readonly: the last second closed, -1 none
    reported: int         # int64_t, readonly: rows that reported the open second
    hits: int             # int64_t, readonly: ... of which were expected
    late_bars: int        # int64_t, readonly: bars of closed (or never opened) seconds, in all
    late_since: int       # int64_t, readonly: ... since the last close()
    opened: bool          # bint, readonly: the last feed() opened a second
    saw_open: bool        # bint, readonly: the last feed() counted a bar of the open second
    last_array: npt.NDArray[np.int64]  # int64[capacity]: latest second each row reported (-1 never)
    def __init__(self, capacity: int, expect_seconds: int = ..., floor: int = ...) -> None: ...
    def feed(
        self,
        rows: npt.NDArray[np.int64],     # const int64_t[:]
        seconds: npt.NDArray[np.int64],  # const int64_t[:]
        start: int,                      # Py_ssize_t
        n: int,                          # Py_ssize_t
        lo: int,                         # int64_t: bars with second <= lo are skipped
        hi: int,                         # int64_t: bars with second > hi are skipped
    ) -> int: ...
    def close(self) -> None: ...
    def outstanding(self) -> int: ...
    def expected(self) -> int: ...
    def complete(self) -> bool: ...
    def late_of(self, s: int) -> int: ...
