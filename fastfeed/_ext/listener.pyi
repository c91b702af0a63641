from typing import Any, Callable, Optional

from picows import WSFrame, WSListener, WSTransport

KIND_RSV: str
KIND_UTF8: str
KIND_BINARY: str
KIND_TOO_BIG: str
KIND_FRAGMENT: str
KIND_SESSION: str

def utf8_valid(data: bytes | bytearray | memoryview) -> bool: ...
class FeedListener(WSListener):
    """picows listener: frame checks, reassembly, zero-copy hand-off of text messages.

    ``sink(payload, recv_ns)`` gets a ``memoryview`` valid only during the call (released
    when the call returns: keep ``bytes(payload)`` if you need it later).
    """

    max_message_size: int      # readonly
    closing: bool              # readonly: a CLOSE was sent or received; later frames are ignored
    last_recv_mono_ns: int     # readonly: CLOCK_MONOTONIC ns of the last socket read with frames
    close_code: Optional[int]  # readonly: code of a CLOSE received from the peer
    close_reason: Optional[str]
    frames: int
    messages: int
    bytes: int
    protocol_errors: int
    binary_frames: int
    sink_errors: int
    pings: int
    pongs: int
    fragments: int
    def __init__(
        self,
        sink: Any,  # an object with message_sink() (a capsule, ext/sink.pxd), or a callable (memoryview, recv_ns)
        owner: Any = None,
        stats: Any = None,
        max_message_size: int = 16 * 1024 * 1024,
        buffer_end: Optional[Callable[[], Any]] = None,  # called after the last frame of each read
        tap: Optional["RawTap"] = None,  # each message copied into it (e.g. recording) before the sink
    ) -> None: ...
    def on_ws_connected(self, transport: WSTransport) -> None: ...
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None: ...
    def on_ws_disconnected(self, transport: WSTransport) -> None: ...
    def abandon(self) -> None: ...
    def flush_stats(self) -> None: ...
    def counters(self) -> dict[str, int]: ...
    def idle_ns(self) -> int: ...


TAG_MESSAGE: int  # the tag of a message the listener received

class RawBlock:
    """Sealed entries: per-entry length/tag/time, payloads back to back."""

    n: int
    plen: int
    cap: int
    max_entries: int
    first_ns: int
    def payloads(self) -> memoryview: ...
    def lengths(self) -> memoryview: ...  # uint32[n]
    def tags(self) -> memoryview: ...     # uint8[n]
    def times(self) -> memoryview: ...    # int64[n], ns

class RawTap:
    """A copy of every message in C: entries memcpy'd into preallocated blocks (no Python
    object per message); the consumer seals/pops/releases blocks."""

    block_payload: int
    max_entries: int
    max_free: int
    max_pending: int
    wake_bytes: int
    queued_bytes: int
    released_bytes: int
    dropped: int
    entries: int
    stopped: bool
    def __init__(
        self, *, block_payload: int = 256 * 1024, max_entries: int = 4096, max_pending: int = 256 << 20,
        wake_bytes: int = 4 << 20, wake: Optional[Callable[[], Any]] = None,
        on_overflow: Optional[Callable[[int], Any]] = None, ring_cap: int = 65536, max_free: int = 32,
    ) -> None: ...
    def message(self, payload: bytes | bytearray | memoryview, recv_ns: int) -> None: ...
    def entry(self, tag: int, payload: bytes | bytearray | memoryview, recv_ns: int) -> None: ...
    def sink(self, inner: Callable[[Any, int], Any]) -> "TapSink": ...
    def stop(self) -> None: ...
    def seal(self) -> None: ...
    def pop(self) -> Optional[RawBlock]: ...
    def release(self, b: RawBlock) -> None: ...
    @property
    def pending_bytes(self) -> int: ...
    @property
    def pending_entries(self) -> int: ...

class TapSink:
    inner: Callable[[Any, int], Any]
    def __init__(self, tap: RawTap, inner: Callable[[Any, int], Any]) -> None: ...
    def __call__(self, payload: Any, recv_ns: int) -> Any: ...
