"""``python -m tspike_lab train ...``: the ``tspike`` command line."""

import sys

from .cli import main

sys.exit(main())
