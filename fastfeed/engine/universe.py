"""The symbol table: ticker/pair string -> dense row id, bounded.

Rows are assigned once, in order of first sight, and never reused, so a row id can
index the engine's preallocated arrays for the life of the process.  Capacity is fixed
at construction; a symbol that does not fit raises :class:`UniverseFull` from
:meth:`Universe.row` and is counted in :attr:`Universe.overflow` — the table never
grows past its capacity and never hands out a row twice.

Hot path: fill loops look symbols up in :attr:`Universe.index` (a plain ``dict``)
directly; ``index.get(sym, -1)`` costs a dict probe (see ``benches/bench_engine.py``).
"""
from __future__ import annotations

from ..errors import UniverseFull

__all__ = ["Universe", "UniverseFull"]


class Universe:
    __slots__ = ("_capacity", "_index", "_symbols", "overflow")

    def __init__(self, capacity: int = 16384) -> None:
        capacity = int(capacity)
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self._capacity = capacity
        self._index: dict[str, int] = {}
        self._symbols: list[str] = []
        #: symbols refused because the universe was full
        self.overflow = 0

    def row(self, symbol: str) -> int:
        """Row of ``symbol``, assigning the next free row; raises :class:`UniverseFull`."""
        r = self._index.get(symbol)
        if r is not None:
            return r
        if not isinstance(symbol, str):
            raise TypeError(f"symbol must be str, got {type(symbol).__name__}")
        n = len(self._symbols)
        if n >= self._capacity:
            self.overflow += 1
            raise UniverseFull(
                f"universe full: {n} symbols (capacity {self._capacity}); {symbol!r} refused")
        self._index[symbol] = n
        self._symbols.append(symbol)
        return n

    def get(self, symbol: str) -> int:
        """Row of ``symbol``, or -1 if unknown (never assigns)."""
        return self._index.get(symbol, -1)

    def symbol(self, row: int) -> str:
        """Symbol of ``row``; IndexError if the row is not assigned."""
        if not 0 <= row < len(self._symbols):
            raise IndexError(f"row {row} is not assigned")
        return self._symbols[row]

    @property
    def symbols(self) -> list[str]:
        """Assigned symbols in row order: the list itself (read-only by contract, like
        :attr:`index`; it grows as rows are assigned — copy it to keep a snapshot)."""
        return self._symbols

    @property
    def index(self) -> dict[str, int]:
        """The symbol -> row mapping itself (read-only by contract; do not mutate)."""
        return self._index

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._index

    def __repr__(self) -> str:
        return f"Universe({len(self._symbols)}/{self._capacity} symbols, overflow={self.overflow})"
