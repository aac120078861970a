"""The training engine: a :class:`TrainConfig` in, a :class:`History` out.

One function, :func:`train`, runs the paper's recipe (SGD, momentum 0.9, weight decay on
conv/linear weights only, cosine schedule, cross-entropy on T-averaged logits) on any data
set of :mod:`tspike_lab.data` and any network of :mod:`tspike_lab.models`, on a CPU, one GPU
or several processes under ``torchrun`` (DistributedDataParallel).

A run folder (``out_dir``) holds ``metrics.jsonl`` (one JSON object per epoch) and
``checkpoint.pt`` (written atomically after every epoch). Everything random in an epoch is a
function of ``(seed, epoch)``, so a run killed at any point and resumed from its last
checkpoint ends with exactly the weights and metrics of an uninterrupted run (on the CPU;
cuDNN autotuning and atomics make GPU runs only approximately repeatable).

No printing and no argument parsing here: :mod:`tspike_lab.cli` is the command line.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import data
from .checkpoint import (
    CHECKPOINT_FORMAT,
    METRICS,
    RunDir,
    check_model_state,
    check_resumable,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from .config import TrainConfig, check_memory
from .errors import CheckpointError, ConfigError, ResourceError, RunFolderError, TrainingDiverged
from .hardware import cpu_bf16_reason, onednn_1x1_hazard, resolve_device
from .kernels.cpu import simd_from_env
from .kernels.recycle import env_int
from .models import spiking_layers
from .probes import Recorder
from .results import read_jsonl

# TrainConfig and load_checkpoint (imported above) stay importable from here: the learning notebooks do.
__all__ = [
    "History",
    "train",
    "best_epoch",
    "evaluate",
    "param_groups",
    "lr_at",
    "model_from_checkpoint",
    "read_metrics",
    "augment_for",
    "check_environment",
]

logger = logging.getLogger(__name__)


@dataclass
class History:
    """Per-epoch metrics of a run.

    ``epochs[i]`` is a dict: epoch (1-based), step (optimizer steps so far), train_loss,
    train_acc, test_loss, test_acc, firing_rate (mean over spiking layers of the fraction of
    nonzero b in {-1, 0, 1} on the test set), firing_rates (per layer), amplitudes (layer ->
    mean a), lr (of the epoch's last step), epoch_time_s, images_per_s, best_test_acc and
    best_epoch (the best test_acc so far and its epoch: the released scripts report this
    ``best_acc``; ``final["test_acc"]`` is the last epoch's). Test fields are None in epochs
    skipped by ``eval_every``.
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    run_dir: str | None = None

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's metrics ({} before the first epoch)."""
        return self.epochs[-1] if self.epochs else {}

    def column(self, key: str) -> list[Any]:
        """One metric across epochs, e.g. ``history.column("test_acc")``."""
        return [e.get(key) for e in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.epochs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.epochs[i]


def augment_for(config: TrainConfig):
    """The :class:`tspike_lab.data.Augment` a config trains with (None: no augmentation).

    A field the config leaves None takes the data set's recipe, ``DATASETS[dataset].augment``.
    """
    recipe = data.DATASETS[config.dataset].augment
    if not config.augment or recipe is None:
        return None
    chosen = {k: (recipe[k] if getattr(config, k) is None else getattr(config, k)) for k in recipe}
    return data.Augment(**chosen)


# --------------------------------------------------------------------------- pieces


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimizer groups: conv/linear weights with ``weight_decay``; all else with 0.

    BatchNorm weights and biases, conv/linear biases and spike amplitudes a are exempt, as
    in the paper's code. Parameters with ``requires_grad=False`` are left out.
    """
    conv_linear = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    decay_ids = {id(m.weight) for m in model.modules() if isinstance(m, conv_linear) and m.weight is not None}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if id(p) in decay_ids else no_decay).append(p)
    return [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(
    step: int, *, lr: float, total_steps: int, warmup_steps: int = 0, schedule: str = "cosine", steps_per_epoch: int = 1
) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    warm-up:      lr * (step + 1) / warmup_steps                      for step < warmup_steps
    cosine:       lr * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2   afterwards
    cosine_epoch: the same in epochs, e = step // steps_per_epoch:
                  lr * (1 + cos(pi * (e - warmup_epochs) / (epochs - warmup_epochs))) / 2
                  (the released CosineAnnealingLR(T_max=epochs), stepped after each epoch)
    constant:     lr
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "cosine_epoch":
        n = max(int(steps_per_epoch), 1)
        step, total_steps, warmup_steps = step // n, total_steps // n, warmup_steps // n
    span = max(total_steps - warmup_steps, 1)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 0x7573]).generate_state(1, np.uint64)[0] >> 1)


def _reseed(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


# --------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(config: TrainConfig) -> tuple[_Dist, torch.device]:
    """Join the process group torchrun describes (WORLD_SIZE > 1): nccl on CUDA, gloo on CPU."""
    world = env_int("WORLD_SIZE", 1)  # checked by check_environment() already; empty: unset
    local_rank = env_int("LOCAL_RANK", 0)
    device = resolve_device(config.device, local_rank)
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return _Dist(), device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns), device


def _all_reduce(t: torch.Tensor, d: _Dist) -> torch.Tensor:
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _any_rank(flag: bool, d: _Dist, device: torch.device) -> bool:
    """True if ``flag`` holds on any rank (every rank must take the same branch before a collective)."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(_all_reduce(t, d).item() > 0)


# --------------------------------------------------------------------------- loops


def _autocast(device: torch.device, amp: bool, cpu_amp: bool = False, amp_dtype: str = "bfloat16"):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=getattr(torch, amp_dtype))
    if cpu_amp and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _prepare(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = data.time_first(x.to(device, non_blocking=True))  # event frames [B, T, C, H, W] -> [T, B, C, H, W]
    if x.dim() == 4 and channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    *,
    device: torch.device | str | None = None,
    amp: bool = True,
    cpu_amp: bool = False,
    channels_last: bool = False,
    max_steps: int | None = None,
    _dist: _Dist | None = None,
    amp_dtype: str = "bfloat16",
) -> dict[str, Any]:
    """Test loss, accuracy and firing rates of ``model`` over ``loader``.

    The firing rate of a layer is the fraction of its b in {-1, 0, 1} that are nonzero
    (-1 spikes count) over all neurons, steps and test samples; ``firing_rate`` is the mean
    over layers. A distributed loader's ``keep`` mask (see :func:`tspike_lab.data.make_loader`)
    marks the wrapped copies that even out the shards: they are counted nowhere, so every test
    sample counts once over all ranks.

    Returns:
        dict with test_loss (cross-entropy on T-averaged logits), test_acc, firing_rate,
        firing_rates (layer name -> rate).
    """
    d = _dist or _Dist()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    try:
        with Recorder(model) as rec:
            layers = rec.layers
            fired = torch.zeros(len(layers), dtype=torch.float64, device=device)
            total = torch.zeros(len(layers), dtype=torch.float64, device=device)
            keep_all, seen = getattr(loader, "keep", None), 0
            for step, (x, y) in enumerate(loader, 1):
                if max_steps is not None and step > max_steps:
                    break
                x, y = _prepare(x, device, channels_last), y.to(device, non_blocking=True)
                keep = None if keep_all is None else keep_all[seen : seen + y.numel()].to(device, torch.float64)
                seen += y.numel()
                with _autocast(device, amp, cpu_amp, amp_dtype):
                    logits = model(x)
                logits = logits.float()
                losses = F.cross_entropy(logits, y, reduction="none").double()
                hits = (logits.argmax(-1) == y).double()
                if keep is None:
                    loss_sum += losses.sum()
                    correct += hits.sum()
                    count += y.numel()
                else:
                    loss_sum += (losses * keep).sum()
                    correct += (hits * keep).sum()
                    count += keep.sum()
                for i, (_, layer) in enumerate(layers):
                    b = layer.b_seq if keep is None else layer.b_seq[:, keep > 0]  # [T, B, ...]
                    fired[i] += b.count_nonzero()
                    total[i] += b.numel()
    finally:
        model.train(was_training)
    sums = _all_reduce(torch.cat([torch.stack([loss_sum, correct, count]), fired, total]), d).tolist()
    n = sums[2]
    rates = [f / t if t else float("nan") for f, t in zip(sums[3 : 3 + len(layers)], sums[3 + len(layers) :])]
    return {
        "test_loss": sums[0] / n if n else float("nan"),
        "test_acc": sums[1] / n if n else float("nan"),
        "firing_rate": float(np.mean(rates)) if rates else float("nan"),
        "firing_rates": {name: r for (name, _), r in zip(layers, rates)},
    }


def _amplitudes(model: nn.Module) -> dict[str, float]:
    return {name: float(layer.graded_spikes_factor.detach().float().mean()) for name, layer in spiking_layers(model)}


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, T-averaged logits [B, K])."""
    if config.loss == "ce":
        logits = model(x).float()
        return F.cross_entropy(logits, y, label_smoothing=config.label_smoothing), logits
    logits_seq = model(x, return_seq=True).float()  # [T, B, K]
    t, b, k = logits_seq.shape
    # TET (Deng et al. 2022): mean over t of CE(logits_t, y), optionally + lambda * MSE(logits_t, phi).
    ce = F.cross_entropy(logits_seq.reshape(t * b, k), y.repeat(t), label_smoothing=config.label_smoothing)
    loss = (1.0 - config.tet_lambda) * ce
    if config.tet_lambda:
        loss = loss + config.tet_lambda * F.mse_loss(logits_seq, torch.full_like(logits_seq, config.tet_phi))
    return loss, logits_seq.mean(0)


def _grad_norm(params: list[nn.Parameter], grad_clip: float | None) -> torch.Tensor:
    """Global L2 norm of the gradients (before clipping to ``grad_clip``, if given)."""
    if grad_clip is not None:
        return nn.utils.clip_grad_norm_(params, grad_clip)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if hasattr(nn.utils, "get_total_norm"):  # torch >= 2.6
        return nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _loss_limit(num_classes: int) -> float:
    """A loss above this has diverged: 100 x ln(K), the cross-entropy of logits a hundred times wider than at start.

    A fresh network's cross-entropy is about ln(K); past this bound its logits have blown up
    and every neuron fires at every step (a learning rate of 1e6 gives losses of 1e8-1e20).
    """
    return 100.0 * math.log(max(num_classes, 2))


def _check_finite(
    stats: torch.Tensor, first_step: int, epoch: int, d: _Dist, note: str = "", limit: float = math.inf
) -> None:
    """Raise TrainingDiverged at the first step whose loss or gradient norm is not finite, or whose loss
    exceeds ``limit`` (on any rank).

    ``stats[k] = (loss, grad_norm)`` of step ``first_step + k``. A NaN need not reach the loss:
    a spike ``u >= threshold`` is False for NaN, so NaN weights can give a finite loss and NaN
    gradients; hence the gradient norm is checked too.
    """
    bad = ~torch.isfinite(stats).all(dim=1) | (stats[:, 0] > limit)
    any_bad = bad.any()
    first = torch.where(any_bad, bad.to(torch.int64).argmax(), torch.full((), -1, device=stats.device))
    if d.enabled:
        # every rank must stop at the same check, or the others would wait in a collective
        flag = torch.stack([any_bad.to(torch.float64), first.to(torch.float64)])
        gathered = [torch.zeros_like(flag) for _ in range(d.world_size)]
        dist.all_gather(gathered, flag)
        hits = [int(g[1]) for g in gathered if g[0] > 0]
        first_bad = min(hits) if hits else -1
    else:
        first_bad = int(first) if bool(any_bad) else -1
    if first_bad >= 0:
        loss, gnorm = stats[first_bad].tolist()
        why = f" (above {limit:.0f} = 100 x ln(classes))" if math.isfinite(loss) and loss > limit else ""
        raise TrainingDiverged(
            f"training diverged at epoch {epoch}, step {first_step + first_bad} (1-based, within the epoch): "
            f"loss {loss:.6g}{why}, gradient norm {gnorm:.6g}. {note}Lower TrainConfig.lr or set grad_clip."
        )


def _check_epoch_end(
    model: nn.Module,
    row: dict[str, Any],
    epoch: int,
    d: _Dist,
    device: torch.device,
    note: str,
    limit: float = math.inf,
) -> None:
    """Raise TrainingDiverged if the epoch's last update left a weight or buffer non-finite, or the test pass did.

    The per-step check sees each step's loss and gradients before the update; the last update
    of an epoch and the evaluation after it are only seen here.
    """
    bad_tensors = [
        name
        for name, t in (*model.named_parameters(), *model.named_buffers())
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    bad_metrics = [
        k
        for k in ("train_loss", "test_loss", "test_acc")
        if isinstance(row.get(k), float) and not (math.isfinite(row[k]) and (k == "test_acc" or row[k] <= limit))
    ]
    if _any_rank(bool(bad_tensors or bad_metrics), d, device):
        what = []
        if bad_tensors:
            what.append(f"non-finite weights in {bad_tensors[:3]}" + (" ..." if len(bad_tensors) > 3 else ""))
        if bad_metrics:
            what.append(
                ", ".join(f"{k} {row[k]:.6g}" for k in bad_metrics) + f" (not finite, or a loss above "
                f"{limit:.0f} = 100 x ln(classes))"
            )
        what = "; ".join(what) or "non-finite values on another rank"
        raise TrainingDiverged(
            f"training diverged at the end of epoch {epoch}: {what}. {note}Lower TrainConfig.lr or set grad_clip."
        )


# --------------------------------------------------------------------------- train


def _load_source(plan, config: TrainConfig):
    """The run's DataSource: data missing from the plan's folder, of the wrong kind or damaged fail here, named."""
    return data.probe(plan, num_steps=config.num_steps)


def _check_same_data(ckpt: dict[str, Any], source, config: TrainConfig) -> None:
    """Refuse to resume on other data than the checkpoint was trained on (data_dir is free on resume)."""
    saved = ckpt.get("data_fingerprint")
    if saved is None and source.fingerprint is not None and not config.assume_same_data:
        raise RunFolderError(
            f"out_dir {config.out_dir} holds a checkpoint that records no data fingerprint (written "
            f"before tspike_lab recorded one), so nothing can tell whether data_dir "
            f"{config.data_dir!r} (data {source.fingerprint}) is the data it was trained on; if it "
            f"is, resume with --assume-same-data (TrainConfig.assume_same_data=True), else choose a "
            f"new out_dir"
        )
    if saved is not None and source.fingerprint is not None and saved != source.fingerprint:
        raise RunFolderError(
            f"out_dir {config.out_dir} was trained on data {saved} but data_dir "
            f"{config.data_dir!r} holds data {source.fingerprint}; resume with the data it "
            f"started on, or choose a new out_dir"
        )


def check_environment() -> None:
    """Raise ConfigError naming the variable when ``TSPIKE_STREAM_BYTES``, ``TSPIKE_RECYCLE_MB`` or one of
    torchrun's ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` is not a whole number >= 0, or ``TSPIKE_SIMD`` is
    not 0 or 1 (``TSPIKE_DATA`` is checked where the data folder is used: :func:`tspike_lab.data.cache_dir`)."""
    env_int("TSPIKE_STREAM_BYTES", 0, unit="bytes")
    env_int("TSPIKE_RECYCLE_MB", 0, unit="MiB")
    simd_from_env()
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env_int(name, 0)


def train(config: TrainConfig) -> History:
    """Train a spiking network as ``config`` says; return its per-epoch metrics (``tspike_lab.fit``).

    ``config`` was checked when it was made; what depends on this machine and process (the
    environment variables, the device, native bfloat16, memory, the data) is checked here,
    before anything is written. Under ``torchrun`` (WORLD_SIZE > 1)
    every process calls this; rank 0 alone writes files and shows progress; metrics are
    summed over ranks. With ``out_dir`` set, resumes from ``out_dir/checkpoint.pt`` when
    ``resume`` and the checkpoint's config matches (else RunFolderError naming the differing
    fields).

    Raises:
        ConfigError: a device, environment variable or data folder this machine cannot use.
        RunFolderError: an out_dir that belongs to another run. CheckpointError: an unreadable
        checkpoint. TrainingDiverged: NaN/inf in the loss, the gradients, the weights or the
        evaluation (the message names the epoch and the step).
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    check_environment()
    d, device = _setup_distributed(config)
    run = RunDir(Path(config.out_dir) if config.out_dir is not None else None, d.main)
    done = False
    try:
        if config.sync_bn and d.enabled and device.type != "cuda":
            raise ConfigError(
                f"TrainConfig.sync_bn=True needs CUDA devices (torch's SyncBatchNorm is GPU-only), "
                f"got device {str(device)!r}; use sync_bn=False on the CPU",
                field="sync_bn",
            )
        if config.cpu_amp and device.type == "cpu" and cpu_bf16_reason() is not None:
            raise ConfigError(
                f"TrainConfig.cpu_amp=True needs native bfloat16: {cpu_bf16_reason()}; use cpu_amp=False",
                field="cpu_amp",
            )
        plan = data.describe(config.dataset, config.data_dir)  # a wrong data_dir fails before any folder is made
        run.open()
        try:
            history = _train(config, d, device, run, plan)
        except (MemoryError, RuntimeError) as exc:
            err = _out_of_memory(exc, config, run)
            if err is None:
                raise
            raise err from exc
        if d.owns_group:
            # every rank leaves together: tearing gloo down while a peer still has a
            # collective in flight aborts that peer ("terminate called without an active exception")
            dist.barrier()
        done = True
        return history
    finally:
        run.close(failed=not done)
        if d.owns_group and dist.is_initialized():
            # DDP's reducer holds the gloo group: collect it (and its worker threads' pending work)
            # now, not at interpreter exit, where gloo's threads can abort the process
            gc.collect()
            dist.destroy_process_group()


def _out_of_memory(exc: BaseException, config: TrainConfig, run: RunDir) -> ResourceError | None:
    """A ResourceError for an allocation failure (MemoryError, torch's OutOfMemoryError, allocator error), else None."""
    if isinstance(exc, ResourceError):
        return None
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    oom = (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or any(
            s in text for s in ("can't allocate memory", "out of memory", "Cannot allocate memory", "not enough memory")
        )
    )
    if not oom:
        return None
    kept = ""
    if run.path is not None:
        kept = (
            " The last checkpoint in the run folder is intact: resume with a smaller batch_size."
            if run.checkpoint.exists()
            else " No checkpoint was written."
        )
    return ResourceError(
        f"ran out of memory training arch {config.arch!r} (width={config.width}, batch_size="
        f"{config.batch_size}, num_steps={config.num_steps}): {text[:200]}; lower batch_size, "
        f"num_steps or width.{kept}"
    )


@dataclass
class _Session:
    """What one training run works with, built once by :func:`_start`."""

    config: TrainConfig
    d: _Dist
    device: torch.device
    run: RunDir
    model: nn.Module  # the bare model (checkpoints, evaluation)
    net: nn.Module  # what the forward runs: the model or its DDP wrapper
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]
    source: Any
    channels_last: bool
    augment: Any
    scaler: Any = None  # a GradScaler for float16 autocast on CUDA (the released ImageNet script's), else None
    steps_per_epoch: int = 0
    total_steps: int = 0
    warmup_steps: int = 0
    global_step: int = 0

    def loader(self, split: str, epoch: int):
        # A truncated evaluation (max_eval_steps) reads a fixed, seeded random subset, the same
        # every epoch: test splits are often ordered by class, so their first batches are not a sample.
        c = self.config
        truncated_test = split == "test" and c.max_eval_steps is not None
        return data.make_loader(
            self.source,
            split,
            batch_size=c.batch_size,
            device=self.device,
            augment=self.augment if split == "train" else None,
            shuffle=split == "train" or truncated_test,
            seed=c.seed,
            epoch=0 if truncated_test else epoch,
            rank=self.d.rank,
            world_size=self.d.world_size,
            drop_last=split == "train",
            num_workers=c.num_workers,
        )


def _grad_scaler(config: TrainConfig, device: torch.device):
    """A GradScaler where float16 autocast runs (CUDA, ``amp_dtype="float16"``), else None."""
    if config.amp and config.amp_dtype == "float16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def _build(config: TrainConfig, d: _Dist, device: torch.device, run: RunDir, source) -> _Session:
    """The model (seeded), its optimizer, and the DDP wrapper when distributed."""
    channels_last = config.channels_last and not source.is_sequence
    _reseed(config.seed)  # the initial weights depend on the seed only
    model = config.build_model(num_classes=source.num_classes, in_channels=source.in_channels)
    model.to(device)
    if channels_last and device.type == "cpu" and (hazard := onednn_1x1_hazard(model)) is not None:
        logger.info("channels_last off: %s would hit oneDNN's strided 1x1 backward bug on the CPU", hazard)
        channels_last = False
    if channels_last:
        model.to(memory_format=torch.channels_last)
    groups = param_groups(model, config.weight_decay)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    else:
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
    scaler = _grad_scaler(config, device)
    return _Session(
        config,
        d,
        device,
        run,
        model,
        model,
        optimizer,
        [p for g in groups for p in g["params"]],
        source,
        channels_last,
        augment_for(config),
        scaler,
    )  # channels_last as used: batches follow the model


def _wrap_distributed(s: _Session) -> None:
    if not s.d.enabled:
        return
    net = s.model
    if s.config.sync_bn:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    s.net = nn.parallel.DistributedDataParallel(
        net,
        device_ids=[s.device.index] if s.device.type == "cuda" else None,
        find_unused_parameters=False,
        gradient_as_bucket_view=True,
    )
    s.model = s.net.module  # SyncBN conversion returns a new module tree; optimizer params are shared


def _schedule(s: _Session) -> None:
    c = s.config
    steps = len(s.loader("train", 1))
    if c.max_steps_per_epoch is not None:
        steps = min(steps, c.max_steps_per_epoch)
    if steps < 1:
        raise ConfigError(
            f"TrainConfig.batch_size={c.batch_size} exceeds the training set size per process; "
            f"no full batch to train on",
            field="batch_size",
            value=c.batch_size,
        )
    s.steps_per_epoch, s.total_steps, s.warmup_steps = steps, steps * c.epochs, steps * c.warmup_epochs


def _divergence_note(s: _Session, epoch: int) -> str:
    if s.run.path is None:
        return "No checkpoint is kept (out_dir=None). "
    if epoch > 1:
        return f"{s.run.checkpoint} still holds epoch {epoch - 1}, the last good one. "
    return "No checkpoint was written (the first epoch diverged). "


def _train_epoch(s: _Session, epoch: int) -> tuple[list[float], float, float]:
    """One pass over the training split: ``([loss sum, correct, count] over ranks, last lr, seconds)``."""
    c, device = s.config, s.device
    note, limit = _divergence_note(s, epoch), _loss_limit(s.source.num_classes)
    check_every = 1 if device.type != "cuda" else 25  # a host sync per check; on CPU it is free
    train_loader = s.loader("train", epoch)
    s.net.train()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    stats = torch.zeros(s.steps_per_epoch, 2, dtype=torch.float32, device=device)  # (loss, grad norm) per step
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    checked, lr = 0, c.lr
    bar = tqdm(
        total=s.steps_per_epoch,
        desc=f"epoch {epoch}/{c.epochs}",
        leave=False,
        disable=not (c.progress and s.d.main),
        dynamic_ncols=True,
    )
    try:
        for i, (x, y) in enumerate(train_loader):
            if i >= s.steps_per_epoch:
                break
            lr = lr_at(
                s.global_step,
                lr=c.lr,
                total_steps=s.total_steps,
                warmup_steps=s.warmup_steps,
                schedule=c.schedule,
                steps_per_epoch=s.steps_per_epoch,
            )
            for g in s.optimizer.param_groups:
                g["lr"] = lr
            x, y = _prepare(x, device, s.channels_last), y.to(device, non_blocking=True)
            with _autocast(device, c.amp, c.cpu_amp, c.amp_dtype):
                loss, logits = _loss(s.net, x, y, c)
            s.optimizer.zero_grad(set_to_none=True)
            if s.scaler is None:
                loss.backward()
            else:
                s.scaler.scale(loss).backward()
                s.scaler.unscale_(s.optimizer)
            stats[i, 0] = loss.detach()
            gnorm = _grad_norm(s.params, c.grad_clip)
            if (
                s.scaler is not None
            ):  # an overflowing float16 gradient is skipped and the scale lowered, not a divergence
                gnorm = torch.where(torch.isfinite(gnorm), gnorm, torch.zeros_like(gnorm))
            stats[i, 1] = gnorm
            if (i + 1 - checked) >= check_every or i + 1 == s.steps_per_epoch:
                _check_finite(stats[checked : i + 1], checked + 1, epoch, s.d, note, limit)  # before the step
                checked = i + 1
                bar.set_postfix(loss=f"{float(stats[i, 0]):.4f}", lr=f"{lr:.3g}", refresh=False)
            if s.scaler is None:
                s.optimizer.step()
            else:
                s.scaler.step(s.optimizer)
                s.scaler.update()
            s.global_step += 1
            sums[0] += loss.detach().double() * y.numel()
            sums[1] += (logits.detach().argmax(-1) == y).sum()
            sums[2] += y.numel()
            bar.update(1)
    finally:
        bar.close()
    if checked < s.steps_per_epoch:
        _check_finite(stats[checked:], checked + 1, epoch, s.d, note, limit)
    totals = _all_reduce(sums, s.d).tolist()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return totals, lr, time.perf_counter() - t0


def _epoch_row(s: _Session, epoch: int, t0: float) -> dict[str, Any]:
    """Train one epoch, test it when due, and return its metrics row."""
    c = s.config
    sums, lr, train_time = _train_epoch(s, epoch)
    if s.d.enabled:
        # BatchNorm running statistics differ per rank after the last step: use rank 0's
        for buf in s.model.buffers():
            dist.broadcast(buf, 0)
    row: dict[str, Any] = {
        "epoch": epoch,
        "step": s.global_step,
        "train_loss": sums[0] / sums[2],
        "train_acc": sums[1] / sums[2],
        "test_loss": None,
        "test_acc": None,
        "firing_rate": None,
        "firing_rates": None,
    }
    if epoch % c.eval_every == 0 or epoch == c.epochs:
        row.update(
            evaluate(
                s.model,
                s.loader("test", epoch),
                device=s.device,
                amp=c.amp,
                cpu_amp=c.cpu_amp,
                channels_last=s.channels_last,
                max_steps=c.max_eval_steps,
                _dist=s.d,
                amp_dtype=c.amp_dtype,
            )
        )
    _check_epoch_end(s.model, row, epoch, s.d, s.device, _divergence_note(s, epoch), _loss_limit(s.source.num_classes))
    row["amplitudes"] = _amplitudes(s.model)
    row["lr"] = lr
    row["epoch_time_s"] = time.perf_counter() - t0
    row["images_per_s"] = sums[2] / train_time if train_time > 0 else float("nan")
    return row


def best_epoch(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """``best_test_acc`` and ``best_epoch`` so far: the released scripts' ``best_acc`` (the first epoch to reach it)."""
    tested = [(e["test_acc"], e["epoch"]) for e in epochs if e.get("test_acc") is not None]
    if not tested:
        return {"best_test_acc": None, "best_epoch": None}
    acc, epoch = max(tested, key=lambda p: p[0])  # max keeps the first of equal values, as `if best_acc < acc`
    return {"best_test_acc": acc, "best_epoch": epoch}


def _state(s: _Session, epoch: int, history: History) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": s.model.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scheduler": {
            "schedule": s.config.schedule,
            "step": s.global_step,
            "steps_per_epoch": s.steps_per_epoch,
            "total_steps": s.total_steps,
            "warmup_steps": s.warmup_steps,
        },
        "history": history.epochs,
        "rng": rng_state(),
        "config": s.config.to_dict(),
        "data_fingerprint": s.source.fingerprint,
        **({"scaler": s.scaler.state_dict()} if s.scaler is not None else {}),
    }


def _train(config: TrainConfig, d: _Dist, device: torch.device, run: RunDir, plan) -> History:
    ckpt = run.existing(config)
    history = History(
        epochs=list(ckpt["history"]) if ckpt else [],
        config=config.to_dict(),
        run_dir=str(run.path) if run.path is not None else None,
    )
    if ckpt is not None and ckpt["epoch"] >= config.epochs:
        run.rewrite_metrics(history.epochs)
        return history  # already complete

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    source = _load_source(plan, config)
    if ckpt is not None:
        _check_same_data(ckpt, source, config)
    check_memory(
        config,
        device,
        in_channels=source.in_channels,
        image_size=source.image_size,
        num_classes=source.num_classes,
        is_sequence=source.is_sequence,
    )  # before the network is built
    s = _build(config, d, device, run, source)
    _schedule(s)
    start_epoch = 1
    if ckpt is not None:
        check_resumable(
            ckpt,
            s.model,
            s.optimizer,
            {"steps_per_epoch": s.steps_per_epoch, "total_steps": s.total_steps, "warmup_steps": s.warmup_steps},
            run.checkpoint,
        )
        s.model.load_state_dict(ckpt["model"])
        s.optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, s.global_step = ckpt["epoch"] + 1, ckpt["scheduler"]["step"]
        if s.scaler is not None and "scaler" in ckpt:
            s.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        run.rewrite_metrics(history.epochs)
        logger.info("resuming %s at epoch %d", run.path, start_epoch)
    del ckpt
    _wrap_distributed(s)

    for epoch in range(start_epoch, config.epochs + 1):
        _reseed(_epoch_seed(config.seed, epoch))  # anything random beyond the loader's (seed, epoch)
        t0 = time.perf_counter()
        row = _epoch_row(s, epoch, t0)
        row.update(best_epoch(history.epochs + [row]))
        history.epochs.append(row)
        run.save(_state(s, epoch, history), row)
    return history


def model_from_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The trained network a run folder's ``checkpoint.pt`` holds (in eval mode), and the config it was trained with.

    ``path`` is the checkpoint or its run folder. The classes and input channels are read from
    the weights, so no data is needed.
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    config = TrainConfig.from_dict(ckpt["config"])
    state = ckpt["model"]
    shapes = [state.get(k) for k in ("classifier.weight", "stem.conv.weight")]
    if not all(isinstance(t, torch.Tensor) and t.dim() >= 2 for t in shapes):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds no classifier.weight and stem.conv.weight of arch "
            f"{config.arch!r}: not this library's network"
        )
    model = config.build_model(num_classes=shapes[0].shape[0], in_channels=shapes[1].shape[1])
    check_model_state(state, model, Path(path))
    model.load_state_dict(state)
    return model.eval(), config


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch metrics a run wrote to ``run_dir/metrics.jsonl``."""
    return read_jsonl(Path(run_dir) / METRICS)
