"""``python -m tspike_lab train ...``: the ``tspike`` command line."""

from .cli import run

run()
