"""``python -m dispatcher.simulator``: the standalone simulator."""

import sys

from dispatcher.simulator.cli import main

sys.exit(main(sys.argv[1:]))
