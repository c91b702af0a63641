"""Recordings: the file format, writer, reader, replay and export."""
from .format import *  # noqa: F401,F403
from .format import __all__ as _format_all
from .replay import *  # noqa: F401,F403
from .replay import __all__ as _replay_all

__all__ = [*_format_all, *_replay_all]
