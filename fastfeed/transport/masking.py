"""Key masking: the one function that hides API keys in URLs, log lines and texts.

Every URL, event, log line, ``repr`` and exception text that leaves fastfeed goes through
:func:`mask_secrets` (or :func:`mask_url` for a URL alone): the value of every key-like
query parameter (``apiKey=``, ``apikey=``, ``api_key=``, ``key=``, ``token=``,
``secret=``, in any case) and every key this process was given (:func:`remember_secret`:
the sessions' keys, the keys in connection URLs) become ``***``.
"""
from __future__ import annotations

import logging
import re
import urllib.parse
from typing import Any

__all__ = ["MaskingAdapter", "mask_secrets", "mask_url", "remember_secret", "secrets_of"]

#: a credential-looking query parameter and its value
KEY_RE = re.compile(r"(?i)((?:api[_-]?key|apikey|key|token|secret)=)[^&\s#'\"]*")
#: the user information of a URL (``nats://user:password@``, ``nats://token@``, ...)
USERINFO_RE = re.compile(r"(?i)\b((?:nats|tls|wss?)://)[^@/\s]*@")

#: a key shorter than this is not searched for in free text (it would mask ordinary words)
MIN_SECRET_LEN = 4

#: every key handed to this process (sessions, connection URLs): masked wherever it appears
_known_secrets: set[str] = set()


def mask_url(url: str) -> str:
    """``url`` with every ``apiKey=`` (and similar) query value, any user information
    (``user:password@``, ``token@``) and every remembered key replaced by ``***``
    (:func:`mask_secrets`, named for its most common use)."""
    return mask_secrets(url)


def secrets_of(url: str) -> list[str]:
    """The credential values in the query of ``url`` (4+ characters), to mask wherever they appear."""
    try:
        q = urllib.parse.urlsplit(url).query
        return [
            v
            for k, v in urllib.parse.parse_qsl(q, keep_blank_values=False)
            if KEY_RE.match(f"{k}=") and len(v) >= MIN_SECRET_LEN
        ]
    except Exception:
        return []


def remember_secret(*secrets: str | None) -> None:
    """From now on, :func:`mask_secrets` hides each of ``secrets`` in any text."""
    _known_secrets.update(s for s in secrets if s and len(s) >= MIN_SECRET_LEN)


def mask_secrets(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """``text`` with key-looking query values, every remembered key and each of
    ``secrets`` replaced by ``***``: the one masking function."""
    text = USERINFO_RE.sub(r"\1***@", KEY_RE.sub(r"\1***", text))
    for s in sorted({*secrets, *_known_secrets}, key=len, reverse=True):
        if s and s in text:
            text = text.replace(s, "***")
    return text


class MaskingAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Logger adapter handed to picows: masks keys in messages, arguments and tracebacks."""

    def __init__(self, logger: logging.Logger, secrets: list[str]):
        super().__init__(logger, {})
        self._secrets = secrets

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except Exception:
            text = f"{msg} {args!r}"
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            import traceback

            if exc_info is True:
                import sys

                exc_info = sys.exc_info()
            if isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            text += "\n" + "".join(traceback.format_exception(*exc_info))
        kwargs.pop("stack_info", None)
        self.logger.log(level, "%s", mask_secrets(text, self._secrets), **kwargs)
