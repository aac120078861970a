"""``python -m tspike_lab.reproduce aggregate results/``."""

import sys

from . import main

sys.exit(main())
