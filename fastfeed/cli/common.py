"""What every ``fastfeed`` sub-command shares: exit codes, the one error -> exit-code
mapping, connection options, building and running a Feed."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from typing import Any, Sequence

from ..errors import AuthError, RecordingError
from ..feeds.registry import FEEDS

EXIT_OK, EXIT_FAIL, EXIT_AUTH, EXIT_INTERRUPTED = 0, 1, 2, 130

#: files larger than this get a progress bar when stderr is a terminal
PROGRESS_MIN_BYTES = 32 << 20


def _topics_help() -> str:
    defaults = [f"{', '.join(f.default_topics)} for {f.name}" for f in FEEDS.values() if f.default_topics]
    required = [f.name for f in FEEDS.values() if not f.default_topics]
    return f"topics (default {', '.join(defaults)}; required for {', '.join(required)})"


class CliError(Exception):
    """An expected failure: printed as one line on stderr, exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def exit_status(e: BaseException) -> tuple[int, str] | None:
    """The exit code and the one stderr line for an expected error; None for a bug.

    The line is for a user of the command line: no exception class names (see :func:`plain`)."""
    if isinstance(e, CliError):
        return e.code, plain(str(e))
    if isinstance(e, AuthError):
        if e.key_env:  # the key's source, never the key
            return EXIT_AUTH, f"--api-key / {e.key_env} refused: {plain(str(e.reason))}"
        return EXIT_AUTH, f"authentication failed: {plain(str(e))}"
    if isinstance(e, OSError) and e.strerror and not isinstance(e, ConnectionError):
        return EXIT_FAIL, f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    if isinstance(e, (RecordingError, RuntimeError, OSError, ValueError, TimeoutError, ConnectionError)):
        return EXIT_FAIL, plain(str(e)) or ("timed out" if isinstance(e, TimeoutError) else "failed, with no detail")
    return None


#: "ConnectionRefusedError: ", "picows.WSError: ": a Python class name before its message
_CLASS_PREFIX = re.compile(r"\b(?:[a-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Rejected|Full|Exit): ")
_ERRNO = re.compile(r"\[Errno (\d+)\] ")


def plain(text: str) -> str:
    """``text`` without Python's words: class-name prefixes go, ``[Errno 111] x`` reads
    ``Connection refused: x`` (unless ``x`` says it already)."""
    text = _CLASS_PREFIX.sub("", text)

    def errno_words(m: re.Match[str]) -> str:
        words = os.strerror(int(m.group(1)))
        rest = text[m.end():]
        return "" if rest.lower().startswith(words.lower()) else f"{words}: "

    return _ERRNO.sub(errno_words, text)


def formatter(prog: str) -> argparse.HelpFormatter:
    """Help that keeps the epilog's examples as written."""
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def add_command(sub: Any, name: str, func: Any, *, help: str, description: str,
                epilog: str) -> argparse.ArgumentParser:
    """Register the sub-command ``name`` running ``func(args) -> exit code``."""
    p = sub.add_parser(name, help=help, description=description, epilog=epilog, formatter_class=formatter)
    p.set_defaults(func=func)
    return p


def add_connection_args(p: argparse.ArgumentParser, *, subscribe_help: str | None = None) -> None:
    """``--feed --url --api-key --subscribe``, as every connecting command takes them."""
    p.add_argument("--feed", choices=tuple(FEEDS), default="vantafin", help="which feed's protocol (default: vantafin)")
    p.add_argument("--url", help="WebSocket URL (default: the vendor's real URL), or nats://HOST:PORT to read a `fastfeed relay`")
    p.add_argument(
        "--api-key",
        help=f"API key (default: {' / '.join('$' + f.api_key_env for f in FEEDS.values())}); never printed or stored",
    )
    p.add_argument("--subscribe", nargs="+", metavar="TOPIC", help=subscribe_help or _topics_help())


def parse_windows_arg(text: str, option: str = "--windows") -> tuple[int, ...]:
    """``"60,300"`` -> ``(60, 300)``; a bad value is a :class:`CliError` naming ``option``."""
    from ..engine import DEPTH_LIMIT
    from ..snapshot import parse_windows

    try:
        windows = parse_windows(text)
    except ValueError as e:
        raise CliError(f"{option}: {e}") from None
    if max(windows) > DEPTH_LIMIT:
        raise CliError(f"{option}: the longest window may be at most {DEPTH_LIMIT} seconds, "
                       f"got {max(windows)}")
    return windows


def check_connection_args(args: argparse.Namespace) -> None:
    """What ``Feed`` would refuse, said with the options' names (:class:`CliError`)."""
    info = FEEDS[args.feed]
    if args.url is None and not (args.api_key or os.environ.get(info.api_key_env)):
        raise CliError(f"no API key for {info.name}: set {info.api_key_env} or pass --api-key, "
                       "or pass --url of a simulator (`fastfeed simulate`)")
    if not args.subscribe and not info.default_topics:
        raise CliError(f"--feed {info.name} needs --subscribe, e.g. --subscribe {info.example_topic}")


def make_feed(args: argparse.Namespace, windows: Sequence[int], **kw: Any) -> Any:
    """The ``Feed`` the connection options describe (a bad option is a :class:`CliError`)."""
    from ..feed import Feed

    check_connection_args(args)
    try:
        return Feed(
            feed=args.feed,
            url=args.url,
            api_key=args.api_key,
            subscribe=args.subscribe,
            windows=windows,
            record=getattr(args, "record", None),
            **kw,
        )
    except ValueError as e:  # ConfigurationError is a ValueError; a bad topic names itself
        raise CliError(plain(str(e))) from None


def report_recording(feed: Any) -> None:
    """One stderr line if a recording lost data or failed (the feed itself went on)."""
    rec = feed.recording
    if rec and (rec.get("error") or rec.get("dropped")):
        print(f"fastfeed: recording {rec.get('path')}: {rec.get('error') or ''} "
              f"({rec.get('dropped', 0)} messages not recorded)", file=sys.stderr)


def check_bars(feed: Any) -> None:
    """A run that ended without one bar says why: a :class:`CliError` (exit 1) when messages
    arrived but none was usable (the usual sign of a ``--feed`` that does not match the URL),
    else one stderr line when the vendor said the market is not open."""
    stats = feed.stats_dict()
    if stats["bars"]:
        return
    kinds = dict(stats.get("decode_errors_by_kind") or {})
    if stats.get("unknown_messages"):
        kinds["unknown"] = stats["unknown_messages"]
    if kinds:
        what = ", ".join(f"{n:,} {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
        raise CliError(f"no bars: {stats['messages']:,} message(s) arrived and none was usable ({what}); "
                       f"--feed {feed.feed_name} may not match the URL {feed.url}")
    market = feed.market
    if market is not None and market != "open":
        print(f"fastfeed: no bars: the vendor says the market is {market}", file=sys.stderr)


async def listen(feed: Any, duration: float | None) -> None:
    """Run ``feed`` for ``duration`` seconds (None: until it ends), then close it."""
    await feed.start_async()
    try:
        await asyncio.wait_for(asyncio.shield(feed._task), timeout=duration)
    except asyncio.TimeoutError:
        pass
    finally:
        await feed.close()


def quiet_reader_log() -> None:
    """The recording commands print one summary line of damage; no per-region log lines."""
    logging.getLogger("fastfeed.record").setLevel(logging.ERROR)


def report_damage(report: dict[str, Any], path: str) -> None:
    """One stderr line when a recording had damaged bytes (skipped)."""
    if report.get("skipped_bytes"):
        probs = report["problems"]
        first = probs[0]
        print(f"fastfeed: {path}: skipped {report['skipped_bytes']} damaged byte(s) in "
              f"{len(probs)} place(s) (first at offset {first['offset']}: {first['reason']}); "
              "every intact record was used", file=sys.stderr)


def want_progress(flag: bool | None, path: str) -> bool:
    """``--progress``/``--no-progress``, else a bar for a large file on a terminal."""
    import os

    if flag is not None:
        return flag
    return sys.stderr.isatty() and os.path.getsize(path) >= PROGRESS_MIN_BYTES


def add_progress_args(p: argparse.ArgumentParser) -> None:
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None, help="show a progress bar on stderr")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
