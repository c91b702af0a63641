"""Deterministic synthetic market: every value is a pure function of ``(seed, ticker, second)``.

Prices follow a multi-scale random walk (value noise over octaves of 2..2^17 seconds with
Brownian amplitude scaling, plus per-second jitter), at price levels from $1 to $1,000
(stocks, in integer cents) and realistic levels for a few crypto pairs.  Being a pure
function of the second, any second can be generated on its own (late joiners, reconnects,
corrections, ground truth, max-rate benchmarks) at a few ms per 12,000-ticker second.
"""
from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

__all__ = ["Market", "StockSecond", "CryptoUpdate", "DEFAULT_PAIRS", "make_tickers"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)

# pair -> (price level, decimals of price, typical trade size)
DEFAULT_PAIRS: dict[str, tuple[float, int, float]] = {
    "btcusd": (41_000.0, 2, 0.02),
    "ethusd": (3_000.0, 2, 0.4),
    "solusd": (100.0, 3, 5.0),
    "ltcusd": (80.0, 3, 3.0),
    "xrpusd": (0.6, 5, 900.0),
}

_FAMOUS = (
    "AAPL MSFT NVDA AMZN GOOGL META TSLA BRK.B JPM V UNH XOM JNJ WMT MA PG HD CVX ABBV "
    "MRK KO PEP COST AVGO ADBE CSCO CRM TMO ACN MCD NFLX AMD INTC ORCL DIS BAC T VZ QCOM IBM"
).split()


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> _S30)) * _M1
        x = (x ^ (x >> _S27)) * _M2
        return x ^ (x >> _S31)


def _h(*parts) -> np.ndarray:
    """Hash of broadcastable integer parts -> uint64."""
    with np.errstate(over="ignore"):
        acc = np.uint64(0x243F6A8885A308D3)
        for p in parts:
            acc = _mix(np.asarray(acc, dtype=np.uint64) ^ (np.asarray(p).astype(np.uint64) * _GOLD))
        return np.asarray(acc, dtype=np.uint64)


def _u(*parts) -> np.ndarray:
    """Uniform [0, 1) from a hash of the parts."""
    return (_h(*parts) >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)


def make_tickers(n: int, seed: int = 0) -> list[str]:
    """``n`` unique, realistic-looking tickers (famous ones first), deterministic in ``seed``."""
    out: list[str] = []
    seen: set[str] = set()
    for t in _FAMOUS[:n]:
        out.append(t)
        seen.add(t)
    letters = string.ascii_uppercase
    rng = np.random.Generator(np.random.PCG64(seed ^ 0x5EED))
    while len(out) < n:
        k = int(rng.choice([1, 2, 3, 4, 4, 4, 5], 1)[0]) if n > 2000 else int(rng.integers(2, 5))
        t = "".join(letters[i] for i in rng.integers(0, 26, k))
        if rng.random() < 0.01:
            t += "." + letters[int(rng.integers(0, 26))]
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


@dataclass
class StockSecond:
    """Bars of one second (only the tickers that traded), prices in integer cents."""

    second: int
    rows: np.ndarray  # int64 ticker indices, ascending
    open: np.ndarray  # int64 cents
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray  # int64 shares

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class CryptoUpdate:
    """One sFOX ticker update (cumulative fields since 00:00 UTC)."""

    pair: str
    ts_ns: int  # envelope timestamp, epoch ns
    last: float
    amount: float
    open: float
    high: float
    low: float
    volume: float  # cumulative since midnight
    vwap: float  # cumulative since midnight
    trade_ms: int  # time of the last trade, epoch ms


class Market:
    """The deterministic market.

    :param seed: everything derives from it.
    :param n_tickers: stock universe size.
    :param trade_fraction: probability that a ticker trades (has a bar) in a given second.
    :param pairs: crypto pairs ``{pair: (price level, decimals, trade size)}``.
    :param sigma: per-sqrt-second log volatility of the random walk.
    """

    OCTAVES = tuple(2 ** k for k in range(1, 18, 2))  # 2 s .. 36 h

    def __init__(
        self,
        seed: int = 0,
        n_tickers: int = 12_000,
        trade_fraction: float = 0.5,
        pairs: dict[str, tuple[float, int, float]] | None = None,
        sigma: float = 4e-4,
    ) -> None:
        if not 0 <= trade_fraction <= 1:
            raise ValueError("trade_fraction must be within [0, 1]")
        self.seed = int(seed)
        self.n_tickers = int(n_tickers)
        self.trade_fraction = float(trade_fraction)
        self.sigma = float(sigma)
        self.tickers = make_tickers(self.n_tickers, self.seed)
        self.index = {t: i for i, t in enumerate(self.tickers)}
        i = np.arange(self.n_tickers, dtype=np.int64)
        self._rows = i
        # price level log-uniform in [$1, $1000]; famous names a bit higher
        self._level = np.exp(np.log(1.0) + _u(self.seed, i, 1) * np.log(1000.0)) * 100.0
        self._vol_level = np.exp(_u(self.seed, i, 2) * np.log(5000.0))  # 1 .. 5000 shares/s
        self.pairs = dict(pairs if pairs is not None else DEFAULT_PAIRS)
        self.pair_names = list(self.pairs)
        self._day_cache: dict[int, dict[str, tuple[np.ndarray, ...]]] = {}
        self._knots: list[dict[int, np.ndarray]] = [{} for _ in self.OCTAVES]
        self._pcache: dict[int, np.ndarray] = {}
        self._skey = _h(self.seed, i, 3)  # per-second draws of a ticker: trade?, range, volume
        self._jkey = _h(self.seed, i, 7)  # per-second price jitter

    # -- noise ---------------------------------------------------------------------------

    def _walk(self, key: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Log-price offset at integer time(s) ``t`` for keys ``key`` (broadcast over time: the
        crypto day paths).  Stocks use the same noise through cached knots (:meth:`_octave`)."""
        acc = np.zeros(np.broadcast(key, t).shape, dtype=np.float64)
        t = np.asarray(t, dtype=np.int64)
        for k, period in enumerate(self.OCTAVES):
            g = t // period
            f = (t - g * period) / period
            a = _u(self.seed, key, 100 + k, g) * 2.0 - 1.0
            b = _u(self.seed, key, 100 + k, g + 1) * 2.0 - 1.0
            acc += (a + (b - a) * f) * (self.sigma * np.sqrt(period))
        return acc

    def _octave(self, k: int, g: int) -> np.ndarray:
        """Value-noise knot ``g`` of octave ``k`` for every ticker (cached: knots change every P s)."""
        cache = self._knots[k]
        got = cache.get(g)
        if got is None:
            period = self.OCTAVES[k]
            got = (_u(self.seed, self._rows, 100 + k, g) * 2.0 - 1.0) * (self.sigma * np.sqrt(period))
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            cache[g] = got
        return got

    def _price_all(self, t: int) -> np.ndarray:
        """Price (cents) of every ticker at the integer time ``t`` (cached for t and t+1)."""
        got = self._pcache.get(t)
        if got is not None:
            return got
        acc = np.zeros(self.n_tickers, dtype=np.float64)
        for k, period in enumerate(self.OCTAVES):
            g = t // period
            f = (t - g * period) / period
            a = self._octave(k, g)
            acc += a + (self._octave(k, g + 1) - a) * f
        with np.errstate(over="ignore"):
            jit = (_mix(self._jkey ^ (np.uint64(t & 0xFFFFFFFFFFFF) * _GOLD)) >> _S11).astype(np.float64)
        acc += 2e-4 * (jit * (1.0 / 9007199254740992.0) - 0.5)
        p = np.maximum(np.rint(self._level * np.exp(acc)).astype(np.int64), 1)
        if len(self._pcache) >= 3:
            self._pcache.pop(next(iter(self._pcache)))
        self._pcache[t] = p
        return p

    # -- stocks --------------------------------------------------------------------------

    def stock_second(self, second: int, rows: np.ndarray | None = None) -> StockSecond:
        """Bars of ``second`` for the tickers (of ``rows``, default all) that trade in it."""
        s = int(second)
        with np.errstate(over="ignore"):
            hsh = _mix(self._skey ^ (np.uint64(s & 0xFFFFFFFFFFFF) * _GOLD))
        m16 = np.uint64(0xFFFF)
        u_trade = (hsh & m16).astype(np.float64) * (1.0 / 65536.0)
        u_hi = ((hsh >> np.uint64(16)) & m16).astype(np.float64) * (1.0 / 65536.0)
        u_lo = ((hsh >> np.uint64(32)) & m16).astype(np.float64) * (1.0 / 65536.0)
        u_v = (hsh >> np.uint64(48)).astype(np.float64) * (1.0 / 65536.0)
        r = self._rows if rows is None else np.asarray(rows, dtype=np.int64)
        if self.trade_fraction < 1.0:
            r = r[u_trade[r] < self.trade_fraction]
        o = self._price_all(s)[r]
        c = self._price_all(s + 1)[r]
        hi = np.maximum(o, c)
        lo = np.minimum(o, c)
        h = hi + np.rint(u_hi[r] * 0.0005 * hi).astype(np.int64)
        low = np.maximum(lo - np.rint(u_lo[r] * 0.0005 * lo).astype(np.int64), 1)
        v = np.maximum(np.rint(self._vol_level[r] * (0.1 + 1.8 * u_v[r])).astype(np.int64), 1)
        return StockSecond(s, r, o, h, low, c, v)

    def correction(self, bars: StockSecond, k: int) -> StockSecond:
        """A correction of ``bars`` (late trades): more volume, a moved close, wider range."""
        s = bars.second
        n = len(bars)
        if n == 0:
            return bars
        u = _u(self.seed, bars.rows, 40 + k, s)
        extra_v = np.maximum(np.rint(bars.volume * (0.05 + 0.5 * u)).astype(np.int64), 1)
        dc = np.rint((u - 0.5) * 0.001 * bars.close).astype(np.int64)
        c = np.maximum(bars.close + dc, 1)
        h = np.maximum(bars.high, c)
        low = np.minimum(bars.low, c)
        return StockSecond(s, bars.rows.copy(), bars.open.copy(), h, low, c, bars.volume + extra_v)

    # -- crypto --------------------------------------------------------------------------

    def _pair_day(self, day: int) -> dict[str, tuple[np.ndarray, ...]]:
        """Per-second paths of every pair over one UTC day (cached, a few days at most)."""
        got = self._day_cache.get(day)
        if got is not None:
            return got
        out: dict[str, tuple[np.ndarray, ...]] = {}
        t = np.arange(day * 86400, day * 86400 + 86400, dtype=np.int64)
        for j, pair in enumerate(self.pair_names):
            level, dec, size = self.pairs[pair]
            key = np.int64(1_000_000 + j)
            price = level * np.exp(self._walk(key, t) + 3e-4 * (_u(self.seed, key, 8, t) - 0.5))
            price = np.round(price, dec)
            vol = np.round(size * (0.05 + 2.0 * _u(self.seed, key, 9, t)), 8)
            cumv = np.cumsum(vol)
            cumpv = np.cumsum(vol * price)
            out[pair] = (price, vol, cumv, cumpv, np.maximum.accumulate(price), np.minimum.accumulate(price))
        if len(self._day_cache) > 3:
            self._day_cache.pop(next(iter(self._day_cache)))
        self._day_cache[day] = out
        return out

    def crypto_updates(self, second: int, interval: int = 3, pairs: list[str] | None = None) -> list[CryptoUpdate]:
        """The sFOX updates of ``second``: each pair updates every ``interval`` seconds (phase per pair)."""
        s = int(second)
        day, sod = divmod(s, 86400)
        d = self._pair_day(day)
        ups: list[CryptoUpdate] = []
        for j, pair in enumerate(self.pair_names):
            if pairs is not None and pair not in pairs:
                continue
            if interval > 1 and (s + j) % interval != 0:
                continue
            price, vol, cumv, cumpv, hi, lo = d[pair]
            ns_off = int(_h(self.seed, 2_000_000 + j, s) % np.uint64(999_000_000))
            ups.append(
                CryptoUpdate(
                    pair=pair,
                    ts_ns=s * 1_000_000_000 + ns_off + 1_000_000,
                    last=float(price[sod]),
                    amount=float(np.round(vol[sod] / 3.0, 8)),
                    open=float(price[0]),
                    high=float(hi[sod]),
                    low=float(lo[sod]),
                    volume=float(np.round(cumv[sod], 8)),
                    vwap=float(cumpv[sod] / cumv[sod]),
                    trade_ms=s * 1000 + ns_off // 1_000_000,
                )
            )
        return ups
