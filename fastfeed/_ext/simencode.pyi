"""Stubs of ``fastfeed._ext.simencode``: the simulator's C frame encoders."""
from typing import Any

def encode_vantafin_frames(
    prefixes: list[bytes], rows: Any, o: Any, h: Any, l: Any, c: Any, v: Any,  # const int64_t[::1]
    ts_ms: int, per_frame: int, bare_single: bool = True,
) -> tuple[bytearray, int]: ...
def encode_massive_frames(
    prefixes: list[bytes], rows: Any, v: Any, av: Any, op: Any, vw4: Any,  # const int64_t[::1]
    o: Any, c: Any, h: Any, l: Any, a4: Any, z: Any, s_ms: int, per_frame: int,
) -> tuple[bytearray, int]: ...
