"""The watch view renders headlessly and ranks what a trader expects to see first."""
import io

import numpy as np
from rich.console import Console

from fastfeed.engine.window import WindowFrame
from fastfeed.cli.watch import build_view, fit_rows, rank_rows, status_line


def frame(opens, closes, volumes, counts):
    n = len(opens)
    o = np.array(opens, float)
    c = np.array(closes, float)
    return WindowFrame(
        window=60, as_of=1_700_000_059, symbols=[f"S{i}" for i in range(n)],
        open=o, high=np.maximum(o, c), low=np.minimum(o, c), close=c,
        volume=np.array(volumes, float), vwap=(o + c) / 2, count=np.array(counts, np.int64),
    )


def render(view, width=160):
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(view)
    return buf.getvalue()


def test_movers_and_volume_leaders_are_ranked_and_empty_rows_left_out():
    f = frame(
        opens=[100, 100, 100, 100, np.nan],
        closes=[110, 90, 101, 100, np.nan],
        volumes=[10, 20, 5_000_000, 1, 0],
        counts=[3, 3, 3, 3, 0],
    )
    _, live, ranks = rank_rows(f, top=2)
    assert ranks["gainers"].tolist() == [0, 2]
    assert ranks["losers"].tolist() == [1, 3]
    assert ranks["leaders"].tolist() == [2, 1]
    assert live.tolist() == [True, True, True, True, False]
    out = render(build_view(f, {"bars": 12}, top=2, title="test"))
    assert "+10.00%" in out and "-10.00%" in out and "5.00M" in out
    assert "S4" not in out  # sent nothing: in no table
    assert "4 of 5 instruments active" in out


def test_status_line_shows_health_and_flags_errors():
    ok = status_line({"bars": 5, "reconnects": 1, "gaps": 2, "decode_errors": 0,
                      "processing_latency_us": {"p99": 12.0}}, bars_per_s=1234.0)
    assert "1,234 bars/s" in ok.plain and "reconnects 1" in ok.plain and "gaps 2" in ok.plain
    assert "p99 processing 12 µs" in ok.plain
    bad = status_line({"decode_errors": 3, "unknown_messages": 1}, 0.0, {"market": "closed"})
    assert "errors 4" in bad.plain and "market closed" in bad.plain
    assert bad.style != ok.style


def test_view_of_an_empty_universe_renders():
    f = frame([], [], [], [])
    out = render(build_view(f, {}, top=5, title="empty"))
    assert "0 of 0 instruments active" in out


def test_view_fits_a_small_terminal():
    assert fit_rows(10, 24) == 5
    assert fit_rows(10, 26) == 6
    assert fit_rows(10, 100) == 10
    assert fit_rows(10, 10) == 3
    f = frame([100.0] * 20, [101.0] * 20, [5.0] * 20, [2] * 20)
    out = render(build_view(f, {}, top=fit_rows(10, 24), title="t"), width=80)
    assert len(out.splitlines()) <= 24
    assert "…" not in out  # nothing truncated at 80 columns


def test_status_line_shows_the_completed_second_latency_and_reasons():
    line = status_line({"seconds_completed": {"complete": 3, "quiet": 1, "next": 0},
                        "second_latency_us": {"p99": 12_400.0}}, 0.0).plain
    assert "second p99 12 ms (complete 75% quiet 25% next 0%)" in line
    assert "second" not in status_line({"seconds_completed": {"complete": 0, "quiet": 0, "next": 0}}, 0.0).plain
