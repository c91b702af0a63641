import pytest

from fastfeed.engine.universe import Universe, UniverseFull


def test_rows_are_dense_stable_and_bounded():
    u = Universe(3)
    assert u.capacity == 3 and len(u) == 0
    assert [u.row(s) for s in ("AAPL", "MSFT", "AAPL", "BTC-USD")] == [0, 1, 0, 2]
    assert u.get("MSFT") == 1 and u.get("NOPE") == -1 and "AAPL" in u
    assert u.symbol(2) == "BTC-USD" and u.symbols == ["AAPL", "MSFT", "BTC-USD"]
    assert u.index == {"AAPL": 0, "MSFT": 1, "BTC-USD": 2}
    with pytest.raises(UniverseFull, match="capacity 3"):
        u.row("TSLA")
    with pytest.raises(UniverseFull):
        u.row("NVDA")
    assert u.overflow == 2 and len(u) == 3 and u.get("TSLA") == -1
    assert u.row("AAPL") == 0          # known symbols still resolve when full


def test_symbols_is_the_live_row_order_and_errors_are_clear():
    u = Universe(2)
    u.row("X")
    syms = u.symbols
    u.row("Y")
    assert syms == ["X", "Y"] and len(u) == 2
    with pytest.raises(IndexError):
        u.symbol(2)
    with pytest.raises(TypeError):
        u.row(b"X")
    with pytest.raises(ValueError):
        Universe(0)


def test_default_capacity():
    assert Universe().capacity == 16384


def test_only_usable_symbols_get_rows():
    from fastfeed.engine.universe import usable_symbol

    for ok in ("BRK.A", "btcusd", "A" * 32, "BTC-USD", "X"):
        assert usable_symbol(ok)
    for bad in ("", "A" * 33, "A" * 10_000, "A B", "TAB\t", "\x00", "\x7f", "é", "📈", b"AAPL", None):
        assert not usable_symbol(bad)
    u = Universe(2)
    with pytest.raises(ValueError, match="unusable"):
        u.row("A B")
    assert len(u) == 0 and u.overflow == 0


def test_reuse_gives_a_row_to_a_new_symbol_and_forgets_the_old():
    u = Universe(2)
    u.row("OLD")
    u.row("KEEP")
    u.reuse(0, "NEW")
    assert u.symbols == ["NEW", "KEEP"] and u.index == {"NEW": 0, "KEEP": 1}
    assert u.get("OLD") == -1 and u.rows_recycled == 1 and u.overflow == 0
    with pytest.raises(ValueError):
        u.reuse(0, "KEEP")          # a symbol never holds two rows
    with pytest.raises(IndexError):
        u.reuse(2, "OTHER")
    assert u.symbols == ["NEW", "KEEP"] and u.rows_recycled == 1
