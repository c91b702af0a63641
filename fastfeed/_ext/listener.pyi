from typing import Any, Callable, Optional

from picows import WSFrame, WSListener, WSTransport

KIND_RSV: str
KIND_UTF8: str
KIND_BINARY: str
KIND_TOO_BIG: str
KIND_FRAGMENT: str
KIND_SESSION: str

def utf8_valid(data: bytes | bytearray | memoryview) -> bool: ...
def encode_vantafin_frames(
    prefixes: list[bytes], rows: Any, o: Any, h: Any, l: Any, c: Any, v: Any,  # const int64_t[::1]
    ts_ms: int, per_frame: int, bare_single: bool = True,
) -> tuple[bytearray, int]: ...
def encode_massive_frames(
    prefixes: list[bytes], rows: Any, v: Any, av: Any, op: Any, vw4: Any,  # const int64_t[::1]
    o: Any, c: Any, h: Any, l: Any, a4: Any, z: Any, s_ms: int, per_frame: int,
) -> tuple[bytearray, int]: ...

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
        sink: Callable[[memoryview, int], Any],
        owner: Any = None,
        stats: Any = None,
        max_message_size: int = 16 * 1024 * 1024,
        buffer_end: Optional[Callable[[], Any]] = None,  # called after the last frame of each read
    ) -> None: ...
    def on_ws_connected(self, transport: WSTransport) -> None: ...
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None: ...
    def on_ws_disconnected(self, transport: WSTransport) -> None: ...
    def abandon(self) -> None: ...
    def flush_stats(self) -> None: ...
    def counters(self) -> dict[str, int]: ...
    def idle_ns(self) -> int: ...
