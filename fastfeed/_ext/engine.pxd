# cython: language_level=3
"""Cython API of :mod:`fastfeed._ext.engine` (source: ``ext/engine.pyx``).

``cimport`` it from the installed package::

    from fastfeed._ext.engine cimport bar_fate, BAR_ACCEPTED

The accept rule of a bar lives here, once: the engine applies it to every bar, and
other code (the decoder) can ask "would this bar be accepted" without repeating it.
"""
from libc.stdint cimport int64_t

# What the engine does with a bar (``bad_row`` aside: a row outside the universe is
# the caller's to check).  The counters of docs/ENGINE.md, in the order checked.
cdef enum BarFate:
    BAR_ACCEPTED = 0
    BAR_INVALID = 1     # counted as invalid_rejected
    BAR_FUTURE = 2      # counted as future_rejected
    BAR_STALE = 3       # counted as stale_dropped


cdef inline bint bar_valid(int64_t second, double open, double high, double low, double close,
                           double volume, double pv) noexcept nogil:
    """The bar is self-consistent: every number finite, ``second >= 0``, ``volume >= 0``,
    ``0 < low <= open, close <= high`` (so every price is > 0 and ``high >= low``)."""
    # x * 0.0 is 0.0 for finite x and NaN for NaN/inf: one test for all six
    if not ((open * 0.0 + high * 0.0 + low * 0.0 + close * 0.0 + volume * 0.0 + pv * 0.0) == 0.0):
        return False
    return (second >= 0 and volume >= 0.0 and low > 0.0
            and low <= open and open <= high and low <= close and close <= high)


cdef inline int bar_fate(int64_t second, double open, double high, double low, double close,
                         double volume, double pv, int64_t T, int64_t depth,
                         double max_future_skew, double now) noexcept nogil:
    """What an engine with clock ``T`` (-1: no bar yet) and ``depth`` does with this bar.

    ``now``: receive time in epoch seconds, NaN for no future check.  A bar accepted
    moves the clock, so within one batch later bars are judged against the new ``T``.
    """
    if not bar_valid(second, open, high, low, close, volume, pv):
        return BAR_INVALID
    if now == now and second > now + max_future_skew:
        return BAR_FUTURE
    if T >= 0 and second <= T - depth:
        return BAR_STALE
    return BAR_ACCEPTED
