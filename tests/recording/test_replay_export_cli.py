"""Parquet export round trips; the record / replay / export commands."""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from fastfeed.recording import CONNECTED, MESSAGE, Reader, Writer

T0 = 1_700_000_000


def _bar(tk, s, o, h, lo, c, v):
    return {"type": "live_quote_second", "ticker": tk, "open": o, "high": h, "low": lo,
            "close": c, "volume": v, "timestamp": s * 1000}


def _write(path, msgs, depth=300):
    w = Writer(path, feed="vantafin", url="ws://127.0.0.1:9/v1/stocks?apiKey=sim-key",
               meta={"topics": ["LS.*"], "engine": {"windows": [60, depth], "depth": depth,
                                                   "capacity": 64, "max_future_skew": 5.0}},
               start_ns=T0 * 10**9)
    w.connected(T0 * 10**9)
    for payload, ns in msgs:
        w.message(payload, ns)
    w.close()


def _session(n_seconds=700):
    """Messages and the bars a correct export holds: last version per (ticker, second)."""
    msgs, truth = [], {}
    for s in range(T0, T0 + n_seconds):
        ns = (s + 1) * 10**9
        bars = []
        for i, tk in enumerate(("AAPL", "MSFT", "ZVZZT")):
            if tk == "ZVZZT" and s % 5:
                continue
            v = 0 if (tk == "MSFT" and s % 11 == 0) else 10 * (i + 1) + s % 13
            b = _bar(tk, s, 100 + i, 101 + i + (s % 3), 99 + i, 100.25 + i, v)
            bars.append(b)
            truth[(tk, s)] = b
        msgs.append((json.dumps(bars).encode(), ns))
        if s % 10 == 0 and s - 3 >= T0:  # a correction 3 s later: replaces
            b = _bar("AAPL", s - 3, 50, 60, 40, 55, 7)
            truth[("AAPL", s - 3)] = b
            msgs.append((json.dumps([b]).encode(), ns + 1))
        if s % 97 == 0:
            msgs.append((b"{broken", ns + 2, ))
            # too far in the future: the engine rejects it, so does the export
            msgs.append((json.dumps([_bar("AAPL", s + 999, 1, 1, 1, 1, 1)]).encode(), ns + 3))
            # older than the depth: stale, dropped by the engine and by the export
            msgs.append((json.dumps([_bar("AAPL", s - 400, 1, 1, 1, 1, 1)]).encode(), ns + 4))
    return msgs, truth


def _expected_rows(truth):
    out = []
    for (tk, s), b in truth.items():
        pv = b["volume"] * (b["high"] + b["low"] + b["close"]) / 3
        vwap = pv / b["volume"] if b["volume"] > 0 else None
        out.append((tk, s, float(b["open"]), float(b["high"]), float(b["low"]), float(b["close"]),
                    float(b["volume"]), pv, vwap))
    return out


def test_parquet_export_round_trips_through_pyarrow_and_pandas(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pd = pytest.importorskip("pandas")
    from fastfeed.recording.export import EXPORT_COLUMNS, export_parquet

    msgs, truth = _session()
    p = tmp_path / "s.ffr"
    _write(p, msgs)
    out = tmp_path / "bars.parquet"
    res = export_parquet(p, out, row_group_rows=500)  # small: exercises incremental writes
    assert res["rows"] == len(truth)
    t = pq.read_table(out)
    assert tuple(t.column_names) == EXPORT_COLUMNS
    assert t.schema.field("instrument").type == pa.string()
    assert t.schema.field("second").type == pa.int64()
    assert all(t.schema.field(c).type == pa.float64() for c in EXPORT_COLUMNS[2:])
    assert pq.ParquetFile(out).metadata.num_row_groups > 1
    df = pd.read_parquet(out)
    assert list(df.columns) == list(EXPORT_COLUMNS)
    # ordered by second, then instrument (first-seen order)
    assert (np.diff(df["second"].to_numpy()) >= 0).all()
    got = {(r.instrument, r.second): r for r in df.itertuples(index=False)}
    assert len(got) == len(df)  # one row per (instrument, second)
    for row in _expected_rows(truth):
        g = got[(row[0], row[1])]
        assert (g.open, g.high, g.low, g.close, g.volume) == row[2:7]
        assert math.isclose(g.pv, row[7], rel_tol=1e-12)
        if row[8] is None:
            assert pd.isna(g.vwap)
        else:
            assert math.isclose(g.vwap, row[8], rel_tol=1e-12)
    # the corrected bar is the one exported
    assert got[("AAPL", T0 + 7)].volume == 7.0


def test_export_matches_the_engine_history(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from fastfeed.recording import export_parquet, replay

    msgs, _ = _session(n_seconds=200)
    p = tmp_path / "s.ffr"
    _write(p, msgs, depth=900)  # depth > session: the engine still holds every bar
    export_parquet(p, tmp_path / "b.parquet")
    t = pq.read_table(tmp_path / "b.parquet").to_pydict()
    res = replay(p)
    for sym in ("AAPL", "MSFT", "ZVZZT"):
        h = res.engine.history(res.universe.get(sym))
        mine = [i for i, x in enumerate(t["instrument"]) if x == sym]
        assert [t["second"][i] for i in mine] == [int(x) for x in h["second"]]
        assert [t["close"][i] for i in mine] == [float(x) for x in h["close"]]
        assert [t["volume"][i] for i in mine] == [float(x) for x in h["volume"]]


def test_cli_replay_prints_the_snapshot_document(tmp_path, capsys):
    from fastfeed.cli import main
    from fastfeed.recording.replay import replay
    from fastfeed.snapshot import dump_json

    msgs, _ = _session(n_seconds=120)
    p = tmp_path / "s.ffr"
    _write(p, msgs)
    assert main(["replay", str(p), "--windows", "60,300", "--format", "json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert list(doc) == ["feed", "as_of", "market", "windows", "stats"]
    assert out.strip() == dump_json(replay(p, windows=(60, 300)).snapshot((60, 300)))
    assert doc["as_of"] == T0 + 119 and set(doc["windows"]) == {"60", "300"}
    assert main(["replay", str(p), "--windows", "60", "--format", "table"]) == 0
    assert "AAPL" in capsys.readouterr().out
    assert main(["replay", str(p), "--format", "csv", "--speed", "max"]) == 0
    assert capsys.readouterr().out.startswith("window,symbol,")


def test_cli_replay_reports_a_torn_tail_and_still_prints(tmp_path, capsys):
    from fastfeed.cli import main

    msgs, _ = _session(n_seconds=30)
    p = tmp_path / "s.ffr"
    _write(p, msgs)
    data = p.read_bytes()
    p.write_bytes(data[:-30])
    assert main(["replay", str(p)]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["feed"] == "vantafin"
    end_len = len(data) - _offset_of_last_record(data)
    assert f"skipped {end_len - 30} damaged byte(s)" in cap.err
    assert cap.err.count("\n") == 1  # one line, not a log line as well


def _offset_of_last_record(data):
    import fastfeed.recording.format as fmt

    pos = fmt.decode_header(data).size
    last = pos
    while pos < len(data):
        last = pos
        pos += fmt.REC_OVERHEAD + fmt.REC_HDR.unpack_from(data, pos)[0]
    return last


def test_cli_errors_are_one_line(tmp_path, capsys):
    from fastfeed.cli import main

    assert main(["replay", str(tmp_path / "missing.ffr")]) == 1
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.ffr"
    bad.write_bytes(b"hello world, not a recording")
    assert main(["replay", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "not a fastfeed recording" in err and "Traceback" not in err
    assert main(["export", str(bad), "--out", str(tmp_path / "x.parquet")]) == 1
    assert not (tmp_path / "x.parquet").exists()
    assert main(["replay", str(bad), "--speed", "fast"]) == 1


def test_cli_export(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from fastfeed.cli import main

    msgs, truth = _session(n_seconds=50)
    p = tmp_path / "s.ffr"
    _write(p, msgs)
    out = tmp_path / "bars.parquet"
    assert main(["export", str(p), "--out", str(out)]) == 0
    assert f"wrote {len(truth):,} bars" in capsys.readouterr().err
    assert pq.read_table(out).num_rows == len(truth)


def test_cli_record_then_replay_against_the_simulator(tmp_path, capsys):
    from fastfeed.cli import main
    from fastfeed.simulator.testing import SimThread

    out = tmp_path / "rec.ffr"
    with SimThread(n_tickers=30, speed=1.0) as sim:
        url = sim.url("vantafin")
        code = main(["record", "--url", url, "--out", str(out), "--duration", "2.5"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "recorded" in err and str(out) in err
    assert b"sim-key" not in out.read_bytes()
    with Reader(out) as r:
        kinds = [x.kind for x in r]
        assert r.complete and r.header.url.endswith("apiKey=***")
        assert r.header.meta["topics"] == ["LS.*"]
        assert r.header.meta["engine"]["windows"] == [60, 300, 900]
    assert kinds[0] == CONNECTED and MESSAGE in kinds
    assert main(["replay", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["stats"]["bars"] > 0 and doc["windows"]["60"]


def test_cli_record_bad_key_exits_2(tmp_path, capsys):
    from fastfeed.cli import main
    from fastfeed.simulator.testing import SimThread

    out = tmp_path / "rec.ffr"
    with SimThread(n_tickers=5) as sim:
        url = sim.url("vantafin", api_key="wrong")
        code = main(["record", "--url", url, "--out", str(out), "--duration", "5"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "wrong" not in err


def test_snapshot_record_then_replay_prints_the_same_windows(tmp_path, capsys):
    """The user-facing promise: `snapshot --record F` then `replay F` → same document
    (but the transport counters, processing latency and lag, which a recording lacks)."""
    from fastfeed.cli import main
    from fastfeed.simulator.testing import SimThread

    out = tmp_path / "snap.ffr"
    with SimThread(n_tickers=40, speed=1.0) as sim:
        code = main(["snapshot", "--url", sim.url("vantafin"), "--duration", "2.5",
                     "--windows", "60,300", "--record", str(out)])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    live = json.loads(cap.out)
    assert main(["replay", str(out), "--windows", "60,300"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    for d in (live, replayed):
        for k in ("frames", "protocol_errors", "protocol_errors_by_kind", "processing_latency_us",
                  "lag_ms"):
            d["stats"].pop(k)
    assert live["windows"]["60"] and replayed == live


def test_attach_recorder_to_a_feed_in_thread_mode(tmp_path):
    from fastfeed.feed import Feed
    from fastfeed.recording import attach_recorder
    from fastfeed.recording.replay import replay
    from fastfeed.simulator.testing import SimThread

    out = tmp_path / "api.ffr"
    with SimThread(n_tickers=20, speed=1.0) as sim:
        feed = Feed("vantafin", url=sim.url("vantafin"), windows=(60,))
        close = attach_recorder(feed, out, compression=None)
        with feed:
            deadline = time.monotonic() + 10
            while feed.stats.messages < 5 and time.monotonic() < deadline:  # a few seconds recorded
                time.sleep(0.05)
        summary = close()
        with pytest.raises(RuntimeError, match="before the feed starts"):
            attach_recorder(feed, tmp_path / "late.ffr")
    assert summary["error"] is None and summary["messages"] > 0
    live = feed.snapshot()
    doc = replay(out).snapshot()
    assert doc["windows"] == live["windows"] and doc["as_of"] == live["as_of"]


def test_replay_progress_flag_is_accepted(tmp_path, capsys):
    from fastfeed.cli import main

    msgs, _ = _session(n_seconds=20)
    p = tmp_path / "s.ffr"
    _write(p, msgs)
    assert main(["replay", str(p), "--progress"]) == 0
    assert json.loads(capsys.readouterr().out)["feed"] == "vantafin"
    pytest.importorskip("pyarrow")
    assert main(["export", str(p), "--out", str(tmp_path / "b.parquet"), "--no-progress"]) == 0


def test_replay_check_reports_contents_and_damage(tmp_path, capsys):
    from fastfeed.cli import main

    msgs, _ = _session(n_seconds=10)
    p = tmp_path / "s.ffr"
    _write(p, msgs)
    assert main(["replay", str(p), "--check"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["complete"] and rep["skipped_bytes"] == 0 and rep["feed"] == "vantafin"
    assert rep["kinds"]["message"] == len(msgs) and rep["kinds"]["connected"] == 1
    assert rep["header"]["topics"] == ["LS.*"] and rep["url"].endswith("apiKey=***")
    p.write_bytes(p.read_bytes()[:-5])
    assert main(["replay", str(p), "--check"]) == 1
    cap = capsys.readouterr()
    assert not json.loads(cap.out)["complete"] and "skipped" in cap.err


def test_export_keeps_exactly_the_bars_the_engine_accepts(tmp_path):
    """Bars that contradict themselves (open above high, close below low, price 0) are
    rejected by the engine, so the export leaves them out too: it asks the engine."""
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from fastfeed.recording import export_parquet, replay

    good = [_bar("AAPL", T0 + k, 100, 101, 99, 100.5, 10) for k in range(5)]
    bad = [_bar("AAPL", T0 + 5, 102, 101, 99, 100.5, 10),    # open above high
           _bar("MSFT", T0 + 5, 100, 101, 99, 98, 10),       # close below low
           _bar("ZVZZT", T0 + 5, 0, 0, 0, 0, 10)]            # price 0
    msgs = [(json.dumps([b]).encode(), (b["timestamp"] // 1000 + 1) * 10**9) for b in good + bad]
    p = tmp_path / "s.ffr"
    _write(p, msgs)
    res = export_parquet(p, tmp_path / "b.parquet")
    t = pq.read_table(tmp_path / "b.parquet").to_pydict()
    assert list(zip(t["instrument"], t["second"])) == [("AAPL", T0 + k) for k in range(5)]
    assert res["rows"] == 5
    eng = replay(p).engine
    assert eng.counters["invalid_rejected"] == 3 and eng.counters["accepted"] == 5
