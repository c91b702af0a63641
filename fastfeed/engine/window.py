"""``WindowFrame``: one rolling window's columns for the instruments known so far."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["WindowFrame"]


@dataclass(frozen=True)
class WindowFrame:
    """One window's columns for the instruments known so far (row ``i`` is ``symbols[i]``).

    ``open/high/low/close/volume/vwap`` are float64, ``count`` int64, all of length
    ``len(symbols)``.  From ``Feed.window(copy=False)`` they are views valid until the
    next engine update; from ``copy=True`` they are the caller's own.
    """

    window: int
    as_of: int | None
    symbols: Sequence[str]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    vwap: np.ndarray
    count: np.ndarray

    def _columns(self) -> dict[str, Any]:
        return {
            "symbol": list(self.symbols),
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "vwap": self.vwap,
            "count": self.count,
        }

    def to_pandas(self):
        """A ``pandas.DataFrame`` indexed by symbol (needs ``pip install fastfeed[pandas]``)."""
        pd = _optional("pandas", "pandas")
        return pd.DataFrame(self._columns()).set_index("symbol")

    def to_arrow(self):
        """A ``pyarrow.Table`` (needs ``pip install fastfeed[arrow]``)."""
        pa = _optional("pyarrow", "arrow")
        return pa.table(self._columns())

    def to_polars(self):
        """A ``polars.DataFrame`` (needs ``pip install fastfeed[polars]``)."""
        pl = _optional("polars", "polars")
        return pl.DataFrame(self._columns())


def _optional(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{module} is not installed: pip install 'fastfeed[{extra}]' (or pip install {module})"
        ) from None
