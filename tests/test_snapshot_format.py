"""Formatting of the snapshot document (the engine side is tested with the Feed)."""
import csv
import io
import json

import pytest

from fastfeed.snapshot import dump_csv, dump_json, parse_windows

DOC = {
    "feed": "vantafin",
    "as_of": 1700000059,
    "windows": {
        "60": {"AAPL": {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 0.0, "vwap": None, "count": 2}},
        "300": {},
    },
    "stats": {"frames": 1},
}


def test_json_is_strict_json_with_null_for_nan():
    text = dump_json(DOC)
    assert "NaN" not in text
    assert json.loads(text)["windows"]["60"]["AAPL"]["vwap"] is None


def test_csv_has_one_row_per_window_and_instrument_and_empty_cell_for_null():
    rows = list(csv.reader(io.StringIO(dump_csv(DOC))))
    assert rows[0] == ["window", "symbol", "open", "high", "low", "close", "volume", "vwap", "count"]
    assert rows[1] == ["60", "AAPL", "1.0", "2.0", "0.5", "1.5", "0.0", "", "2"]
    assert len(rows) == 2


@pytest.mark.parametrize("text,expected", [("60", (60,)), ("60, 300,900", (60, 300, 900))])
def test_parse_windows(text, expected):
    assert parse_windows(text) == expected


@pytest.mark.parametrize("text,message", [
    ("", "no windows"), ("60,abc", "not a whole number"), ("0", "positive"), ("60,60", "repeat"),
])
def test_parse_windows_rejects_bad_input_clearly(text, message):
    with pytest.raises(ValueError, match=message):
        parse_windows(text)
