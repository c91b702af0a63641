"""fastfeed.bench.steady: the engine steady-state figures beside the decode yardstick."""
import numpy as np

from fastfeed.bench import steady
from fastfeed.feeds import vantafin


def test_messages_carry_exactly_the_bars_the_engine_gets():
    m = steady.Market(250, seed=3)
    m.next_second()
    syms = steady.tickers(250)
    msgs = m.messages(syms, 100)
    assert len(msgs) == 3
    quotes = [q for b in msgs for q in vantafin.decoder.decode(b)]
    assert [q.ticker for q in quotes] == [syms[r] for r in m.rows]
    for name, col in (("open", m.o), ("high", m.h), ("low", m.l), ("close", m.c), ("volume", m.v)):
        assert np.array_equal(np.array([getattr(q, name) for q in quotes]), col), name
    assert {q.timestamp for q in quotes} == {m.t * 1000}
    assert (m.l > 0).all() and (m.l <= np.minimum(m.o, m.c)).all() and (m.h >= np.maximum(m.o, m.c)).all()


def test_measure_reports_medians_ratios_and_allocations():
    doc = steady.measure(rows_large=300, rows_small=40, seconds=5, windows=(3, 8), capacity=512,
                         batch=50, bars_per_message=50)
    e = doc["engine_ns_per_bar"]
    assert set(e) == {"300", "40"} and min(e.values()) > 0 and doc["decode_ns_per_bar"] > 0
    r = doc["ratios"]
    assert abs(r["engine_over_decode"] - e["300"] / doc["decode_ns_per_bar"]) < 0.01 * r["engine_over_decode"] + 1e-3
    assert abs(r["large_over_small"] - e["300"] / e["40"]) < 0.01 * r["large_over_small"] + 1e-3
    assert doc["targets"]["engine_over_decode"]["target_max"] == 0.25
    assert doc["targets"]["large_over_small"]["met"] == (r["large_over_small"] <= 1.3)
    assert doc["alloc_bytes_per_bar"] < 1.0          # nothing allocated per bar
