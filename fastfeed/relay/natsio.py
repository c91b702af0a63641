"""The two places where the relay goes below ``nats-py``'s public API (one home for both).

* :func:`send_raw` writes ready-made protocol commands (many ``HPUB``, one write): the
  public ``publish`` costs about 25 µs of Python per message, which the vendor path's
  core would pay for every message of a full market.
* :func:`fast_headers` replaces the client's header parsing on a consumer's connection:
  the library's parser spends ~50 µs per message (a generator per header-name
  character); ours splits the few lines the relay writes.

Both use ``nats-py`` 2.x internals (``Client._send_command``, ``Client._flush_pending``,
``Client._process_headers``); :func:`check` fails loudly when an installed release no
longer has them (the package pins ``nats-py<3``), rather than falling back silently.
"""
from __future__ import annotations

from typing import Any, Optional

__all__ = ["check", "send_raw", "fast_headers"]

_NEEDED = ("_send_command", "_flush_pending", "_process_headers")


def check() -> None:
    """``RuntimeError`` when the installed nats-py lacks an internal the relay uses."""
    from nats.aio.client import Client

    missing = [n for n in _NEEDED if not callable(getattr(Client, n, None))]
    if missing:
        import nats

        raise RuntimeError(f"nats-py {getattr(nats, '__version__', '?')} lacks {', '.join(missing)}: "
                           "fastfeed's relay needs nats-py 2.x (pip install 'nats-py>=2.7,<3')")


async def send_raw(nc: Any, data: bytes) -> None:
    """Queue ``data`` (complete protocol commands) on ``nc`` and wake its flusher."""
    await nc._send_command(data)
    await nc._flush_pending()


def fast_headers(nc: Any) -> None:
    """Parse message headers on ``nc`` with :func:`parse_headers` (same result shape)."""

    async def process_headers(headers: Optional[bytes]) -> Optional[dict[str, str]]:
        return parse_headers(headers)

    nc._process_headers = process_headers


def parse_headers(headers: Optional[bytes]) -> Optional[dict[str, str]]:
    """``NATS/1.0[ <status>[ <description>]]\\r\\nName: value\\r\\n...`` → dict (the status,
    if any, as ``Status`` and ``Description``, as nats-py does); ``None`` when empty."""
    if not headers:
        return None
    first, _, rest = bytes(headers).partition(b"\r\n")
    out: dict[str, str] = {}
    if len(first) > 8:  # inline status: "NATS/1.0 408 Request Timeout"
        status, _, desc = first[9:].strip().partition(b" ")
        if status.isdigit():
            out["Status"] = status.decode()
        if desc:
            out["Description"] = desc.decode("utf-8", "replace")
    for line in rest.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().decode("ascii", "replace")] = value.strip().decode("utf-8", "replace")
    return out or None
