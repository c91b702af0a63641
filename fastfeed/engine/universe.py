"""The symbol table: ticker/pair string -> dense row id, bounded.

Rows are dense ids for the engine's preallocated arrays.  A row is assigned (in
order, ``0 .. capacity-1``) only to a usable symbol (:func:`usable_symbol`) and, in
the feeds, only once one of its bars is accepted by the engine.  Capacity is fixed at
construction; when every row is taken, :meth:`Universe.reuse` gives a row whose
instrument has gone idle (no bar for longer than the engine's depth: it holds none)
to a new symbol, counted in :attr:`Universe.rows_recycled`; a symbol that finds no
row raises :class:`UniverseFull` from :meth:`Universe.row` and is counted in
:attr:`Universe.overflow`.  A row is never held by two symbols.

Hot path: fill loops look symbols up in :attr:`Universe.index` (a plain ``dict``)
directly; ``index.get(sym, -1)`` costs a dict probe (see ``benches/bench_engine.py``).
"""
from __future__ import annotations

from ..errors import UniverseFull

__all__ = ["Universe", "UniverseFull", "usable_symbol", "MAX_SYMBOL_BYTES"]

#: longest usable symbol, in bytes
MAX_SYMBOL_BYTES = 32


def usable_symbol(symbol: object) -> bool:
    """A symbol may get a row: a ``str`` of 1-32 printable ASCII characters, no spaces
    (``BRK.A``, ``btcusd``); anything else (empty, longer, control characters, non-ASCII)
    is a bad value."""
    return (type(symbol) is str and 0 < len(symbol) <= MAX_SYMBOL_BYTES
            and symbol.isascii() and symbol.isprintable() and " " not in symbol)


class Universe:
    __slots__ = ("_capacity", "_index", "_symbols", "overflow", "rows_recycled")

    def __init__(self, capacity: int = 16384) -> None:
        capacity = int(capacity)
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self._capacity = capacity
        self._index: dict[str, int] = {}
        self._symbols: list[str] = []
        #: symbols refused because the universe was full
        self.overflow = 0
        #: rows given to a new symbol after their old one went idle (:meth:`reuse`)
        self.rows_recycled = 0

    def row(self, symbol: str) -> int:
        """Row of ``symbol``, assigning the next free row; raises :class:`UniverseFull`
        (every row taken) or ``ValueError`` (not a :func:`usable_symbol`)."""
        r = self._index.get(symbol)
        if r is not None:
            return r
        if not isinstance(symbol, str):
            raise TypeError(f"symbol must be str, got {type(symbol).__name__}")
        if not usable_symbol(symbol):
            raise ValueError(f"unusable symbol {symbol[:40]!r} (1-32 printable ASCII, no spaces)")
        n = len(self._symbols)
        if n >= self._capacity:
            self.overflow += 1
            raise UniverseFull(
                f"universe full: {n} symbols (capacity {self._capacity}); {symbol!r} refused")
        self._index[symbol] = n
        self._symbols.append(symbol)
        return n

    def reuse(self, row: int, symbol: str) -> None:
        """Give ``row`` (assigned, its instrument idle: the caller cleared the engine's
        row) to the new ``symbol``; the old symbol is forgotten."""
        if not 0 <= row < len(self._symbols):
            raise IndexError(f"row {row} is not assigned")
        if symbol in self._index:
            raise ValueError(f"{symbol!r} already has row {self._index[symbol]}")
        if not usable_symbol(symbol):
            raise ValueError(f"unusable symbol {symbol[:40]!r} (1-32 printable ASCII, no spaces)")
        del self._index[self._symbols[row]]
        self._symbols[row] = symbol
        self._index[symbol] = row
        self.rows_recycled += 1

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
        :attr:`index`; it grows as rows are assigned and an entry changes when its row
        is reused — copy it to keep a snapshot)."""
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
        return (f"Universe({len(self._symbols)}/{self._capacity} symbols, overflow={self.overflow}, "
                f"rows_recycled={self.rows_recycled})")
