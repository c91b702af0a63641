"""Type stubs for :mod:`fastfeed._ext.engine` (ext/engine.pyx).

Cython types are given as comments, pandas-style.  See docs/ENGINE.md for the exact
semantics, the memory formula and measured figures; the ``nogil`` Cython API (and the
accept rule ``bar_fate``) is in ``engine.pxd`` beside this file.
"""
from typing import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["Engine", "WindowView"]

def _set_evict_isa(name: str) -> str:
    """Test hook: force the steady eviction pass's copy, ``"sse2"``, ``"avx2"`` or
    ``"auto"`` (CPUID); returns the previous setting.  ValueError for an unknown name or
    ``"avx2"`` on a CPU without it."""
    ...

#: the most seconds an engine keeps (``depth``, so also the longest window)
DEPTH_LIMIT: int

class WindowView:
    """Columns of one window, each of length ``capacity`` and indexed by row.

    From :meth:`Engine.window`: zero-copy **read-only** views (fields of the engine's
    row blocks: stride 384 bytes for 3 windows), valid until the next
    ``upsert``/``advance_to``.  From
    :meth:`Engine.window_copy`: private contiguous copies.
    """

    W: int
    open: npt.NDArray[np.float64]     # float64[capacity], NaN when count == 0
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]   # 0.0 when count == 0
    vwap: npt.NDArray[np.float64]     # NaN when volume == 0
    count: npt.NDArray[np.int64]      # int64[capacity]
    def __init__(
        self,
        W: int,
        open: npt.NDArray[np.float64],
        high: npt.NDArray[np.float64],
        low: npt.NDArray[np.float64],
        close: npt.NDArray[np.float64],
        volume: npt.NDArray[np.float64],
        vwap: npt.NDArray[np.float64],
        count: npt.NDArray[np.int64],
    ) -> None: ...
    def copy(self) -> WindowView: ...

class Engine:
    capacity: int            # Py_ssize_t, readonly
    depth: int               # Py_ssize_t, readonly
    windows: tuple[int, ...]  # readonly
    max_future_skew: float   # double, readonly
    prefault: bool           # bint, readonly: memory made resident at construction
    def __init__(
        self,
        capacity: int = ...,                 # 16384
        windows: Sequence[int] = ...,        # (60, 300, 900)
        depth: int | None = ...,             # None -> max(windows); <= 65536
        max_future_skew: float = ...,        # 5.0
        prefault: bool = ...,                # True: all memory resident at construction
    ) -> None: ...
    def upsert(
        self,
        rows: npt.NDArray[np.int64],         # const int64_t[:] (any stride)
        seconds: npt.NDArray[np.int64],      # const int64_t[:]
        open: npt.NDArray[np.float64],       # const double[:]
        high: npt.NDArray[np.float64],       # const double[:]
        low: npt.NDArray[np.float64],        # const double[:]
        close: npt.NDArray[np.float64],      # const double[:]
        volume: npt.NDArray[np.float64],     # const double[:]
        pv: npt.NDArray[np.float64],         # const double[:]
        n: int = ...,                        # Py_ssize_t; -1: all
        now: float = ...,                    # double; NaN: no future check
    ) -> int: ...
    def accepts(
        self,
        seconds: npt.NDArray[np.int64],
        open: npt.NDArray[np.float64],
        high: npt.NDArray[np.float64],
        low: npt.NDArray[np.float64],
        close: npt.NDArray[np.float64],
        volume: npt.NDArray[np.float64],
        now: float = ...,                    # NaN: no future check
        pv: npt.NDArray[np.float64] | None = ...,   # None: not checked
        in_order: bool = ...,                # True: each accepted bar moves the clock
    ) -> npt.NDArray[np.bool_]: ...          # one per bar, against the current clock
    def forget_row(self, row: int) -> None: ...      # the row holds no bar afterwards
    def is_idle(self, row: int) -> bool: ...         # no bar for longer than depth
    def advance_to(self, second: int) -> None: ...   # int64_t
    @property
    def T(self) -> int: ...
    def window(self, W: int) -> WindowView: ...
    def window_copy(self, W: int) -> WindowView: ...
    def history(self, row: int, seconds: int | None = ...) -> dict[str, np.ndarray]: ...
    @property
    def counters(self) -> dict[str, int]: ...
    @property
    def internals(self) -> dict[str, int]: ...
    def last_rows(self) -> npt.NDArray[np.int64]: ...
