"""``python -m tspike_lab train ...``: the ``tspike`` command line."""

import logging
import os
import sys

from .cli import main

code = main()
if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1"):
    # A torchrun worker leaves without interpreter finalization: everything it writes is already
    # written atomically and closed, and gloo's C++ threads, torn down during finalization, can abort
    # a finished worker (SIGABRT, "terminate called without an active exception"), failing the run.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
