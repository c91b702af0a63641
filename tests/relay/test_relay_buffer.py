"""The relay's buffer on the vendor side (no NATS needed): copies, bound, drop-oldest."""
from __future__ import annotations

import gc
import random

from fastfeed.relay import publisher as P


def payloads_of(pub: P.RelayPublisher) -> list[tuple[int, bytes, int]]:
    """(relay seq, payload, recv_ns) of every buffered raw entry, oldest first."""
    out = []
    for u in pub._unsent:
        if u.kind == P._RAW:
            for i, (slab, off, n, ns) in enumerate(u.items):
                out.append((u.first + i, bytes(memoryview(slab.buf)[off:off + n]), ns))
    return out


def test_buffer_keeps_exact_copies_drops_oldest_and_recycles_its_slabs():
    rng = random.Random(7)
    bound = 3 * P.SLAB_BYTES
    pub = P.RelayPublisher("nats://127.0.0.1:9", "vantafin", buffer_bytes=bound)
    sent: dict[int, tuple[bytes, int]] = {}
    seq = 0
    for read in range(400):
        for _ in range(rng.randint(1, 12)):
            size = rng.choice((50, 900, 13_000, 70_000, P.SLAB_BYTES // 2))
            data = bytes([rng.randrange(256)]) * size
            view = memoryview(bytearray(data))  # like the listener's: valid during the call only
            ns = 1_700_000_000_000_000_000 + read
            pub.message(view, ns)
            view.release()
            seq += 1
            sent[seq] = (data, ns)
        pub.end_of_read()
        assert pub.buffered_bytes <= bound
    kept = payloads_of(pub)
    assert pub.dropped_messages > 0 and len(kept) + pub.dropped_messages == seq
    # what is kept is the newest, contiguous, byte for byte
    assert [s for s, _, _ in kept] == list(range(seq - len(kept) + 1, seq + 1))
    for s, data, ns in kept:
        assert (data, ns) == sent[s], s
    gc.collect()
    # slabs of dropped reads came back for reuse: memory stays near the bound
    assert 0 < len(pub._free_slabs) <= P.MAX_FREE_SLABS
    assert pub.peak_buffered_bytes <= bound


def test_events_keep_their_place_between_reads():
    pub = P.RelayPublisher("nats://127.0.0.1:9", "vantafin")
    pub.message(b"a", 1)
    pub.event("disconnected", {"reason": "x"})  # ends the read in progress first
    pub.message(b"b", 2)
    pub.end_of_read()
    kinds = [(u.kind, u.first, len(u.items)) for u in pub._unsent]
    assert kinds == [(P._RAW, 1, 1), (P._EVENT, 2, 1), (P._RAW, 3, 1)]
