"""``python -m fastfeed.cli`` (the same as the ``fastfeed`` command)."""
import sys

from .main import main

sys.exit(main())
