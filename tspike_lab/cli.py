"""The ``tspike`` command line: ``tspike train --dataset cifar10 --arch resnet19 ...``.

Every :class:`tspike_lab.config.TrainConfig` field is an option (``num_steps`` ->
``--num-steps``; booleans as ``--amp/--no-amp``; ``none`` for an optional field's None), its
help the field's ``metadata["help"]``. ``--config FILE`` reads a JSON object of fields
(``TrainConfig.to_dict()``; options given as well override it): torchrun launches take the
config so. ``train`` prints the final epoch's metrics as JSON on stdout (rank 0 only under
torchrun); ``env`` prints :func:`tspike_lab.results.environment`.

    tspike train --dataset digits --neuron ternary --epochs 10
    torchrun --standalone --nproc_per_node 8 -m tspike_lab train --dataset cifar10 --arch resnet19 \\
        --epochs 300 --out-dir runs/c10-r19

Values are not checked here: a TrainConfig checks itself when it is made, and the command line
prints its message naming the option. Every error a user can cause
(:class:`tspike_lab.errors.TspikeError`) ends in one line on stderr and exit status 2 (3: the run
diverged); Ctrl-C ends in one line and exit status 130; the run folder keeps its last
checkpoint, and the same command resumes it (:mod:`tspike_lab.frontend`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .checkpoint import CHECKPOINT
from .config import CHOICES, TrainConfig
from .errors import ConfigError, TspikeError
from .frontend import exit_process, make_parser, one_line, rank0, run_guarded, world_size
from .results import SpecialFileError, environment, json_safe, new_run_dir, read_regular
from .train import train

__all__ = ["main", "build_parser", "config_from_args", "option_help"]

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_CONFIG_FILE_BYTES = 1 << 20  # a config is about 1.5 kB of JSON


def _optional(conv):
    def parse(text: str):
        return None if text.lower() in ("none", "null") else conv(text)

    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def option_help(field: dataclasses.Field) -> str:
    """The help of a field's option: its ``metadata["help"]`` and its default."""
    return f"{field.metadata['help']} (default: {field.default})"


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in _FIELDS.values():
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        base = args[0] if optional else hint
        flag = "--" + f.name.replace("_", "-")
        # SUPPRESS: an option not given leaves no value, so --config's value (or the field's default) stands
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": f.name, "help": option_help(f).replace("%", "%%")}
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        conv = {int: int, float: float, str: str}[base]
        kw["type"] = _optional(conv) if optional else conv
        kw["metavar"] = "{" + ",".join(CHOICES[f.name]) + "}" if f.name in CHOICES else base.__name__.upper()
        parser.add_argument(flag, **kw)


def build_parser() -> argparse.ArgumentParser:
    """``tspike`` with sub-commands ``train`` (options from TrainConfig) and ``env``."""
    parser = make_parser("tspike", "Ternary-spike SNNs (Guo et al., AAAI 2024)")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train a spiking network; prints the final metrics as JSON")
    tr.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="a JSON object of TrainConfig fields (TrainConfig.to_dict()); options given as well override it",
    )
    _add_config_options(tr)
    tr.add_argument(
        "--new-run-in",
        metavar="DIR",
        default=None,
        help="create a new, unique run folder under DIR (tspike_lab.results.new_run_dir) as out_dir",
    )
    tr.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub.add_parser("env", help="print the environment (versions, hardware, git commit) as JSON")
    return parser


def _config_file(path: str) -> dict[str, Any]:
    try:
        obj = json.loads(read_regular(path, max_bytes=_CONFIG_FILE_BYTES))
    except (OSError, SpecialFileError) as exc:
        raise ConfigError(
            f"--config {path!r} cannot be read: {getattr(exc, 'strerror', None) or exc}",
            field="config",
            value=path,
            allowed="a readable JSON file",
        ) from None
    except ValueError as exc:
        raise ConfigError(
            f"--config {path!r} is not JSON ({exc})",
            field="config",
            value=path,
            allowed="a JSON object of TrainConfig fields",
        ) from None
    if not isinstance(obj, dict):
        raise ConfigError(
            f"--config {path!r} holds {type(obj).__name__}, not a JSON object of TrainConfig fields",
            field="config",
            value=path,
            allowed="a JSON object of TrainConfig fields",
        )
    return obj


def config_from_args(ns: argparse.Namespace) -> TrainConfig:
    """The TrainConfig named by parsed ``train`` options: ``--config``'s fields, then the options given.

    Raises:
        ConfigError: an unreadable ``--config``, or a value a TrainConfig refuses.
    """
    fields = _config_file(ns.config) if getattr(ns, "config", None) is not None else {}
    fields.update({name: getattr(ns, name) for name in _FIELDS if hasattr(ns, name)})
    return TrainConfig.from_dict(fields)


def _message(e: TspikeError, config: TrainConfig | None) -> str:
    """The error's line, naming a TrainConfig field as its option (``--num-steps``); other errors as they are."""
    field = getattr(e, "field", None)
    if not (isinstance(e, ConfigError) and field is not None and e.allowed is not None):
        return one_line(str(e))
    if field == "root" and config is not None and config.data_dir is not None:  # a loader's root is --data-dir
        field = "data_dir"
    if field not in _FIELDS:
        return one_line(str(e))
    return f"--{field.replace('_', '-')} must be {e.allowed}, got {e.value!r}"


def _interrupted(config: TrainConfig | None) -> str:
    folder = config.out_dir if config is not None else None
    if folder is None:
        return "interrupted (Ctrl-C); no run folder was kept (out_dir none)"
    ckpt = Path(folder) / CHECKPOINT
    if ckpt.is_file():
        return f"interrupted (Ctrl-C); {str(ckpt)!r} holds the last finished epoch: run the same command to resume"
    return f"interrupted (Ctrl-C) before the first epoch ended; no checkpoint in {str(folder)!r}"


def _remove_if_empty(folder: Path | None) -> None:
    if folder is not None:
        try:
            folder.rmdir()  # only an empty folder goes
        except OSError:
            pass


def _train_command(ns: argparse.Namespace) -> int:
    config: TrainConfig | None = None
    made: Path | None = None  # the folder --new-run-in made: removed again if the run fails before writing anything

    def work() -> int:
        nonlocal config, made
        config = config_from_args(ns)
        if ns.new_run_in is not None:
            if config.out_dir is not None:
                raise ConfigError("give --out-dir or --new-run-in, not both")
            if world_size() > 1:
                raise ConfigError(
                    "--new-run-in cannot be used under torchrun (each process would make a folder); use --out-dir"
                )
            if os.path.exists(ns.new_run_in) and not os.path.isdir(ns.new_run_in):
                raise ConfigError(
                    f"--new-run-in {ns.new_run_in!r} is a file, not a folder; give the folder to "
                    f"create the run folder in (it is created if missing)"
                )
            made = new_run_dir(ns.new_run_in, f"{config.dataset}-{config.arch}-{config.neuron}")
            config = dataclasses.replace(config, out_dir=str(made))
        history = train(config)
        if rank0():
            final = dict(history.final)
            if history.run_dir is not None:
                final["run_dir"] = history.run_dir
            print(json.dumps(json_safe(final), indent=2))
        return 0

    code = run_guarded(
        "tspike train", work, explain=lambda e: _message(e, config), interrupted=lambda: _interrupted(config)
    )
    if code != 0:
        _remove_if_empty(made)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tspike`` and ``python -m tspike_lab``; returns the exit status."""
    ns = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if ns.command == "env":
        print(json.dumps(environment(), indent=2))
        return 0
    logging.basicConfig(level=getattr(logging, ns.log_level), format="%(levelname)s %(name)s: %(message)s")
    return _train_command(ns)


def run() -> NoReturn:
    """The ``tspike`` console script: :func:`main`, then :func:`tspike_lab.frontend.exit_process`."""
    exit_process(main())


if __name__ == "__main__":
    run()
