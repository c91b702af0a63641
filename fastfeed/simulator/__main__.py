"""``python -m fastfeed.simulator``: run the simulator server (options: ``--help``)."""
import sys

from .options import main

sys.exit(main())
