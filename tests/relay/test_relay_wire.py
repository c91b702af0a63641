"""The relay's wire pieces: ids, events, HPUB commands, header parsing, durations."""
from __future__ import annotations

import pytest

from fastfeed.relay import wire
from fastfeed.relay.client import parse_duration
from fastfeed.relay.natsio import parse_headers


def test_msg_ids_round_trip_and_foreign_ids_are_none():
    assert wire.parse_msg_id(wire.msg_id(1796085018207256225, 42)) == (1796085018207256225, 42)
    for bad in (None, "", "abc", "12-", "-3", "1-2-3", "x-1"):
        assert wire.parse_msg_id(bad) is None


def test_events_round_trip_and_odd_values_become_text():
    p = wire.encode_event("disconnected", {"reason": "idle", "code": None, "t": (1, 2), "obj": object()}, ns=5)
    ev = wire.decode_event(p)
    assert (ev.kind, ev.ns) == ("disconnected", 5)
    assert ev.info["reason"] == "idle" and ev.info["code"] is None and ev.info["t"] == [1, 2]
    assert isinstance(ev.info["obj"], str)


def test_hpub_command_is_what_the_nats_protocol_expects_and_parses_back():
    payload = b'[{"ev":"A"}]'
    head, body = wire.hpub(b"fastfeed.massive.raw", b"_INBOX.x.0.7", b"9-7", b"9-6", 123, True, payload)
    assert body is payload
    line, _, hdrs = head.partition(b"\r\n")
    verb, subject, reply, hlen, total = line.split(b" ")
    assert (verb, subject, reply) == (b"HPUB", b"fastfeed.massive.raw", b"_INBOX.x.0.7")
    assert int(hlen) == len(hdrs) and int(total) == len(hdrs) + len(payload)
    assert hdrs.endswith(b"\r\n\r\n")
    h = parse_headers(hdrs)
    assert h == {wire.H_MSG_ID: "9-7", wire.H_EXPECTED_LAST: "9-6", wire.H_RECV_NS: "123", wire.H_READ_END: "1"}
    # an event: no receive time, no read end, no predecessor, no reply
    head, _ = wire.hpub(b"fastfeed.massive.events", b"", b"9-1", None, -1, False, b"{}")
    assert head.startswith(b"HPUB fastfeed.massive.events ")
    assert parse_headers(head.partition(b"\r\n")[2]) == {wire.H_MSG_ID: "9-1"}


def test_status_headers_like_the_server_sends_them():
    assert parse_headers(b"NATS/1.0 100 Idle Heartbeat\r\n\r\n") == {"Status": "100", "Description": "Idle Heartbeat"}
    h = parse_headers(b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\nNats-Pending-Bytes: 0\r\n\r\n")
    assert h == {"Status": "408", "Description": "Request Timeout", "Nats-Pending-Messages": "3",
                 "Nats-Pending-Bytes": "0"}
    assert parse_headers(b"") is None and parse_headers(b"NATS/1.0\r\n\r\n") is None


def test_acks():
    assert wire.decode_ack(b'{"stream":"S","seq":5}').seq == 5
    assert wire.decode_ack(b'{"stream":"S","seq":5,"duplicate": true}').duplicate
    e = wire.decode_ack(b'{"error":{"code":400,"err_code":10070,"description":"wrong last msg ID: 1-2"}}').error
    assert e.err_code == wire.WRONG_LAST_MSG_ID and e.description.endswith("1-2")
    assert wire.decode_ack(b"garbage").error is not None


def test_durations():
    assert parse_duration("1d") == 86400 and parse_duration("12h") == 43200
    assert parse_duration("90m") == 5400 and parse_duration("30s") == 30 and parse_duration("2.5") == 2.5
    for bad in ("", "x", "-1d", "0", "nan"):
        with pytest.raises(ValueError):
            parse_duration(bad)
