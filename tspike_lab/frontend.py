"""The one pattern of tspike_lab's command lines: an argparse parser, and work run under one guard.

``tspike`` (:mod:`tspike_lab.cli`), ``python -m tspike_lab.reproduce`` and
``python -m tspike_lab.demo`` build their parsers with :func:`make_parser` and run their work
through :func:`run_guarded`: an error a user can cause (:class:`tspike_lab.errors.TspikeError`)
ends in one line on stderr and its exit status (2; 3 for a diverged run), Ctrl-C in one line and
exit status 130 (:data:`tspike_lab.errors.EXIT_INTERRUPTED`). Under torchrun only rank 0 prints;
:func:`exit_process` ends a command's process.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from .errors import EXIT_INTERRUPTED, TspikeError, exit_code
from .kernels.recycle import env_int

__all__ = ["make_parser", "run_guarded", "one_line", "rank0", "world_size", "exit_process"]


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The parser of command ``prog``; ``description``'s first paragraph is its help text."""
    return argparse.ArgumentParser(prog=prog, description=description.strip().split("\n\n")[0])


def one_line(text: str) -> str:
    """An error's text on one line: a DataLoader worker's re-raised error carries the worker's traceback, whose
    last line is the original message."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and "DataLoader worker" in lines[0]:
        last = lines[-1]
        return last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith("Error") else last
    return " ".join(line.strip() for line in lines)


def rank0() -> bool:
    """True in every process but torchrun's ranks 1, 2, ...: the one process that prints."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def world_size() -> int:
    """torchrun's ``WORLD_SIZE`` (1 when unset, empty or not a whole number: :func:`tspike_lab.train.train`
    refuses a bad value in one line before a run starts)."""
    return env_int("WORLD_SIZE", 1, strict=False)


def exit_process(code: int) -> NoReturn:
    """End the process with exit status ``code``.

    A torchrun worker (``WORLD_SIZE`` > 1) leaves without interpreter finalization: what it writes is
    already written atomically and closed, and gloo's C++ threads, torn down during finalization,
    can abort a finished worker (SIGABRT, "terminate called without an active exception").
    """
    if world_size() > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def run_guarded(
    prog: str,
    work: Callable[[], int],
    *,
    explain: Callable[[TspikeError], str] | None = None,
    interrupted: Callable[[], str] | None = None,
) -> int:
    """``work()``'s exit status; a TspikeError or Ctrl-C it raises ends in one line on stderr and its exit status.

    Args:
        prog: the command, the prefix of every line (``"tspike train"``).
        work: the command's work, returning its exit status.
        explain: the error's line (default: its message on one line), e.g. naming a field as an option.
        interrupted: what Ctrl-C left behind (default: "interrupted (Ctrl-C)").
    Returns:
        ``work()``'s status; 2 for a TspikeError (3: a diverged run); 130 for Ctrl-C.
    """
    try:
        return work()
    except TspikeError as e:
        if rank0():
            print(f"{prog}: error: {explain(e) if explain else one_line(str(e))}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        if rank0():
            print(f"{prog}: {interrupted() if interrupted else 'interrupted (Ctrl-C)'}", file=sys.stderr)
        return EXIT_INTERRUPTED
