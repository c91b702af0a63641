"""The listener's raw tap: messages copied into blocks in C, handed to a consumer thread."""
import threading

from fastfeed._ext.listener import TAG_MESSAGE, RawTap


def _entries(block):
    """(tag, ns, payload) of each entry of a RawBlock."""
    pay = bytes(block.payloads())
    out, off = [], 0
    for length, tag, ns in zip(block.lengths().tolist(), block.tags().tolist(), block.times().tolist()):
        out.append((tag, ns, pay[off:off + length]))
        off += length
    assert off == len(pay) and len(out) == block.n
    return out


def test_tap_blocks_hold_entries_in_order_and_split_when_full():
    tap = RawTap(block_payload=1000)
    msgs = [b"m%d:" % i + b"x" * (i % 37) for i in range(5000)]
    for i, m in enumerate(msgs):
        tap.message(m, i)
    tap.entry(3, b"bye", 5000)  # a consumer's own tag
    tap.message(b"L" * 3000, 5001)  # larger than a block: a block of its own
    tap.seal()
    got, blocks = [], 0
    while (b := tap.pop()) is not None:
        blocks += 1
        assert b.n <= 4096 and (b.plen <= 1000 or b.n == 1)
        assert b.first_ns == _entries(b)[0][1]
        got += _entries(b)
        tap.release(b)
    assert blocks > 5
    assert got == [(TAG_MESSAGE, i, m) for i, m in enumerate(msgs)] + [(3, 5000, b"bye"),
                                                                   (TAG_MESSAGE, 5001, b"L" * 3000)]
    assert tap.pending_bytes == 0 and tap.pending_entries == 0 and tap.dropped == 0


def test_tap_overflow_stops_the_tap_and_counts_the_rest():
    calls = []
    tap = RawTap(block_payload=100, max_pending=1000, on_overflow=calls.append)
    for i in range(50):
        tap.message(b"y" * 50, i)
    assert tap.stopped and len(calls) == 1 and calls[0] > 1000
    assert tap.dropped == 50 - 21  # the entry that crossed the limit is kept
    assert tap.pending_bytes == 21 * 50


def test_tap_order_is_kept_when_the_consumer_seals_concurrently():
    """The producer adds while another thread seals and pops as fast as it can: every
    entry comes out exactly once, in order."""
    tap = RawTap(block_payload=4096)
    n = 200_000
    out: list[int] = []
    done = threading.Event()

    def writer():
        while True:
            finished = done.is_set()
            tap.seal()
            while (b := tap.pop()) is not None:
                out.extend(ns for _, ns, _ in _entries(b))
                tap.release(b)
            if finished:
                return

    t = threading.Thread(target=writer)
    t.start()
    for i in range(n):
        tap.message(b"%d" % i, i)
    done.set()
    t.join()
    assert out == list(range(n))
