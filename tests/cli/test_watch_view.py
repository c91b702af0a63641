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


# -- what a new user saw ---------------------------------------------------------
import logging
import re

import pytest

from fastfeed.cli.watch import BarRate, ConnectionState, _price, logs_through


def busy_frame(n=40, price=189.12):
    o = np.full(n, price)
    c = o * (1 + np.linspace(-0.05, 0.05, n))
    return frame(o, c, np.linspace(1e3, 5e9, n), np.full(n, 60))


LONG_URL = "ws://127.0.0.1:43127/v1/stream?apiKey=***&some=long&query=string&that=goes&on=forever"


@pytest.mark.parametrize("width", [80, 100, 120, 160, 200])
def test_header_and_status_line_fit_80_to_200_columns_without_wrapping(width):
    stats = {"bars": 123_456_789, "decode_errors": 12, "unknown_messages": 3, "reconnects": 4,
             "gaps": 2, "stale_dropped": 99, "processing_latency_us": {"p99": 123.0},
             "feed_latency_ms": {"p99": 45.6}}
    view = build_view(busy_frame(), stats, top=fit_rows(10, 24), title="fastfeed · vantafin",
                      bars_per_s=12_000.0, state={"market": "extended-hours"},
                      connection="retrying in 3 s", url=LONG_URL)
    lines = render(view, width).splitlines()
    assert all(len(line) <= width for line in lines)
    header, status = lines[0], lines[-1]
    # one line each (nothing wrapped onto a second line), the essentials kept
    assert "window 60s" in header and "as of" in header and lines[1].strip().startswith(("Top", "┏", "─"))
    assert status.startswith("retrying in 3 s · market extended-hours · 12,000 bars/s")
    if width >= 200:
        assert LONG_URL in header and "stale 99" in status


def test_as_of_is_a_clock_time_not_an_epoch_integer():
    out = render(build_view(busy_frame(), {}, top=3, title="t"), 200)
    assert "as of 22:14:19 UTC" in out and "1700000059" not in out


@pytest.mark.parametrize("x,text", [(0.93, "0.93"), (0.5, "0.50"), (0.0525, "0.0525"),
                                    (0.00001234, "0.00001234"), (189.1234, "189.12"),
                                    (12345.5, "12,345.50"), (1.0, "1.00"), (0.0, "0.00")])
def test_prices_under_one_are_formatted_like_prices(x, text):
    assert _price(x) == text


def test_prices_under_one_in_the_view():
    out = render(build_view(busy_frame(price=0.93), {}, top=3, title="t"), 160)
    assert "0.930000" not in out and re.search(r"\b0\.9\d{3}\b", out)


def test_bar_rate_is_over_whole_seconds_not_the_refresh_interval():
    # 1,000 bars arrive as one burst each second (at t = k + 0.1); the view refreshes every 0.5 s
    rate, bars, seen = BarRate(), 0, []
    rate.add(0.0, 0)
    for i in range(1, 21):
        t = i * 0.5
        bars = 1000 * int(t - 0.1 + 1) if t >= 0.1 else 0
        r = rate.add(t, bars)
        if t >= 1.0:
            seen.append(r)
    assert all(r == pytest.approx(1000.0) for r in seen), seen


def test_bar_rate_unknown_before_a_second():
    r = BarRate()
    assert r.add(0.0, 0) is None and r.add(0.5, 500) is None and r.add(1.0, 1000) == 1000.0


def test_connection_state_from_feed_events():
    now = [100.0]
    c = ConnectionState(clock=lambda: now[0])
    assert c.describe() == "connecting"
    c.on_event("connected", {})
    assert c.describe() == "connected"
    c.on_event("disconnected", {"reason": "x"})
    c.on_event("reconnecting", {"delay": 4.2, "attempt": 1})
    now[0] += 1.0
    assert c.describe() == "retrying in 3 s"
    c.on_event("auth_failed", {"message": "no"})
    c.on_event("disconnected", {"reason": "closed"})
    assert c.describe() == "auth refused"
    from fastfeed.errors import AuthError

    c2 = ConnectionState()
    c2.note_fatal(None)
    assert c2.describe() == "connecting"
    c2.note_fatal(AuthError("HTTP 401"))
    assert c2.describe() == "auth refused"
    line = status_line({}, None, None, c.describe())
    assert line.plain.startswith("auth refused") and "— bars/s" in line.plain and "yellow" in line.style


def test_market_state_shown_and_slot_empty_when_never_told():
    assert "market closed" in status_line({}, 1.0, {"market": "closed"}, "connected").plain
    assert "market" not in status_line({}, 1.0, {"market": None}, "connected").plain


def test_log_lines_go_through_the_console_while_the_view_runs(capsys):
    buf = io.StringIO()
    console = Console(file=buf, width=120, color_system=None)
    root = logging.getLogger()
    stream = logging.StreamHandler()  # what basicConfig installs: prints to stderr
    root.addHandler(stream)
    try:
        with logs_through(console):
            logging.getLogger("fastfeed.test").warning("universe full: 3 bar(s) skipped")
            assert stream not in root.handlers
        assert stream in root.handlers
    finally:
        root.removeHandler(stream)
    assert "universe full: 3 bar(s) skipped" in buf.getvalue()
    assert "universe full" not in capsys.readouterr().err


def test_window_zero_is_rejected_before_the_simulator_starts(monkeypatch, capsys):
    from fastfeed.cli.main import main
    from fastfeed.simulator import testing

    def no_simulator(*a, **k):
        raise AssertionError("the simulator was started")

    monkeypatch.setattr(testing, "SimProcess", no_simulator)
    for argv in (["watch", "--window", "0"], ["watch", "--window", "-5"],
                 ["watch", "--window", "120", "--windows", "60,300"]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--window" in err[0] and "Traceback" not in err[0]
