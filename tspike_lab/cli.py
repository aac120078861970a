"""The ``tspike`` command line: ``tspike train --dataset cifar10 --arch resnet19 ...``.

Every :class:`tspike_lab.train.TrainConfig` field is an option (``num_steps`` ->
``--num-steps``; booleans as ``--amp/--no-amp``; ``none`` for an optional field's None).
``train`` prints the final epoch's metrics as JSON on stdout (rank 0 only under torchrun);
``env`` prints :func:`tspike_lab.results.environment`.

    tspike train --dataset digits --neuron ternary --epochs 10
    torchrun --standalone --nproc_per_node 8 -m tspike_lab train --dataset cifar10 --arch resnet19 \\
        --epochs 300 --out-dir runs/c10-r19

Choices are not checked here: :func:`tspike_lab.config.validate` owns what is allowed and the
command line prints its message. Every error a user can cause (:class:`tspike_lab.errors.TspikeError`)
ends in one line on stderr and exit status 2 (3: the run diverged). Ctrl-C ends in one line and
exit status 130; the run folder keeps its last checkpoint, and the same command resumes it.
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
from pathlib import Path
from typing import Any, Sequence

from .config import CHOICES, TrainConfig
from .errors import EXIT_INTERRUPTED, ConfigError, TspikeError, exit_code
from .results import environment, json_safe, new_run_dir
from .train import train

__all__ = ["main", "build_parser", "config_from_args", "config_to_args"]

_HELP = {
    "dataset": "data set",
    "data_dir": "data folder (none: $TSPIKE_DATA or ~/.cache/tspike_lab)",
    "arch": "network",
    "neuron": "spiking neuron",
    "num_steps": "time steps T (for cifar10-dvs also the number of frames)",
    "width": "channels of arch 'small'",
    "amplitude": "one trainable amplitude a per layer or per channel",
    "batch_size": "per process",
    "weight_decay": "on conv/linear weights only",
    "warmup_epochs": "linear warm-up epochs",
    "schedule": "learning-rate schedule (cosine per step)",
    "loss": "ce: cross-entropy on T-averaged logits (paper); tet: Deng et al. 2022",
    "tet_lambda": "TET MSE regularizer weight",
    "tet_phi": "TET MSE target",
    "grad_clip": "max gradient norm",
    "augment": "training augmentation (the per-field options override the data set's recipe)",
    "crop_padding": "random-crop padding; none: the data set's recipe",
    "flip": "random horizontal flip; none: the data set's recipe",
    "autoaugment": "AutoAugment CIFAR10 policy; none: the data set's recipe",
    "cutout": "Cutout square side; none: the data set's recipe",
    "roll": "random roll in pixels; none: the data set's recipe",
    "amp": "bf16 autocast on CUDA",
    "cpu_amp": "bf16 autocast on a CPU with native bf16 (AVX512-BF16 / AMX)",
    "channels_last": "channels-last memory format (image input)",
    "device": "auto, cpu, cuda, cuda:N",
    "sync_bn": "SyncBatchNorm under torchrun",
    "out_dir": "run folder (metrics.jsonl, checkpoint.pt); resumed if it holds a checkpoint",
    "resume": "continue from out_dir's checkpoint",
    "assume_same_data": "resume a checkpoint that records no data fingerprint (written before tspike_lab recorded "
                        "one) on data_dir's data, which you vouch is the data it was trained on",
    "max_steps_per_epoch": "truncate epochs (smoke tests)",
    "max_eval_steps": "truncate test passes (smoke tests)",
    "eval_every": "test every k epochs (and at the last)",
    "progress": "tqdm progress bar",
}


def _optional(conv):
    def parse(text: str):
        return None if text.lower() in ("none", "null") else conv(text)

    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        base = args[0] if optional else hint
        flag = "--" + f.name.replace("_", "-")
        help_ = _HELP.get(f.name, "")
        kw: dict[str, Any] = {"default": f.default, "dest": f.name}
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                help=f"{help_} (default: {f.default})".strip(), **kw)
            continue
        conv = {int: int, float: float, str: str}[base]
        kw["type"] = _optional(conv) if optional else conv
        kw["metavar"] = "{" + ",".join(CHOICES[f.name]) + "}" if f.name in CHOICES else base.__name__.upper()
        parser.add_argument(flag, help=f"{help_} (default: {f.default})".strip(), **kw)


def build_parser() -> argparse.ArgumentParser:
    """``tspike`` with sub-commands ``train`` (options from TrainConfig) and ``env``."""
    parser = argparse.ArgumentParser(prog="tspike", description="Ternary-spike SNNs (Guo et al., AAAI 2024)")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train a spiking network; prints the final metrics as JSON")
    _add_config_options(tr)
    tr.add_argument("--new-run-in", metavar="DIR", default=None,
                    help="create a new, unique run folder under DIR (tspike_lab.results.new_run_dir) as out_dir")
    tr.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub.add_parser("env", help="print the environment (versions, hardware, git commit) as JSON")
    return parser


def config_from_args(ns: argparse.Namespace) -> TrainConfig:
    """The TrainConfig named by parsed ``train`` options."""
    return TrainConfig(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(TrainConfig)})


def config_to_args(config: TrainConfig) -> list[str]:
    """``tspike train`` options that rebuild ``config``: the inverse of :func:`config_from_args` (for torchrun)."""
    args: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif value is None:
            if f.default is not None:  # optional booleans (flip, autoaugment) have no "none": their default is None
                args += [flag, "none"]
        else:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    return args


_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def _message(e: TspikeError, config: TrainConfig) -> str:
    """The error's line, naming a TrainConfig field as its option (``--num-steps``); other errors as they are."""
    field = getattr(e, "field", None)
    if not (isinstance(e, ConfigError) and field is not None and e.allowed is not None):
        return _one_line(str(e))
    if field == "root" and config.data_dir is not None:  # a data loader's root is the --data-dir given
        field = "data_dir"
    if field not in _FIELDS:
        return str(e)
    return f"--{field.replace('_', '-')} must be {e.allowed}, got {e.value!r}"


def _one_line(text: str) -> str:
    """An error's text on one line: a DataLoader worker's re-raised error carries the worker's traceback, whose
    last line is the original message."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and "DataLoader worker" in lines[0]:
        last = lines[-1]
        return last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith("Error") else last
    return " ".join(line.strip() for line in lines)


def _interrupted(config: TrainConfig) -> str:
    folder = config.out_dir
    if folder is None:
        return "interrupted (Ctrl-C); no run folder was kept (out_dir none)"
    from .checkpoint import CHECKPOINT

    ckpt = Path(folder) / CHECKPOINT
    if ckpt.is_file():
        return f"interrupted (Ctrl-C); {str(ckpt)!r} holds the last finished epoch: run the same command to resume"
    return f"interrupted (Ctrl-C) before the first epoch ended; no checkpoint in {str(folder)!r}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tspike`` and ``python -m tspike_lab``; returns the exit status."""
    parser = build_parser()
    ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if ns.command == "env":
        print(json.dumps(environment(), indent=2))
        return 0

    rank0 = os.environ.get("RANK", "0").strip() in ("", "0")
    logging.basicConfig(level=getattr(logging, ns.log_level), format="%(levelname)s %(name)s: %(message)s")
    config = config_from_args(ns)
    made = None  # the folder --new-run-in made: removed again if the run fails before writing anything
    try:
        if ns.new_run_in is not None:
            if config.out_dir is not None:
                raise ConfigError("give --out-dir or --new-run-in, not both")
            if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1"):
                raise ConfigError("--new-run-in cannot be used under torchrun (each process would make a folder); "
                                  "use --out-dir")
            from .config import validate

            validate(config)  # before a folder is made
            if os.path.exists(ns.new_run_in) and not os.path.isdir(ns.new_run_in):
                raise ConfigError(f"--new-run-in {ns.new_run_in!r} is a file, not a folder; give the folder to "
                                  f"create the run folder in (it is created if missing)")
            made = new_run_dir(ns.new_run_in, f"{config.dataset}-{config.arch}-{config.neuron}")
            config.out_dir = str(made)
        history = train(config)
    except TspikeError as e:
        _remove_if_empty(made)
        if rank0:
            print(f"tspike train: error: {_message(e, config)}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        _remove_if_empty(made)
        if rank0:
            print(f"tspike train: {_interrupted(config)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if rank0:
        final = dict(history.final)
        if history.run_dir is not None:
            final["run_dir"] = history.run_dir
        print(json.dumps(json_safe(final), indent=2))
    return 0


def _remove_if_empty(folder: Path | None) -> None:
    if folder is not None:
        try:
            folder.rmdir()  # only an empty folder goes
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
