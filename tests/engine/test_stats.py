from fastfeed.engine.stats import CONTRACT_KEYS, Stats


def test_stats_document_starts_with_contract_keys_and_counts_errors_by_kind():
    s = Stats()
    s.count_decode_error("json")
    s.count_decode_error("type", 3)
    d = s.as_dict()
    assert tuple(d)[: len(CONTRACT_KEYS)] == CONTRACT_KEYS
    assert d["decode_errors"] == 4
    assert d["decode_errors_by_kind"] == {"json": 1, "type": 3}


def test_latency_percentiles_are_none_until_recorded_then_in_display_units():
    s = Stats()
    assert s.as_dict()["processing_latency_us"]["p99"] is None
    for ns in (1_000, 2_000, 3_000):
        s.processing_latency.record_value(ns)
    p = s.as_dict()["processing_latency_us"]
    assert p["count"] == 3
    assert 2.9 <= p["p99"] <= 3.01


def test_gap_list_is_bounded():
    s = Stats()
    for i in range(5):
        s.record_gap(i, i + 10, keep=3)
    assert s.gaps == 5 and len(s.gap_list) == 3
