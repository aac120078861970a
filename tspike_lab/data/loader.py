"""Batch iterators: device-resident gathering for in-memory sources, DataLoader for file-based ones."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .augment import Augment, autoaugment, cutout, random_crop, random_flip, random_roll
from .sources import DataSource, check_split_name

logger = logging.getLogger(__name__)


def mix_seed(*values: int | str) -> int:
    """Hash a tuple of ints/strings into a 63-bit seed (stable across runs and platforms)."""
    digest = hashlib.blake2b(repr(tuple(values)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def time_first(x: torch.Tensor) -> torch.Tensor:
    """A batch as the networks take it: event frames ``[B, T, C, H, W] -> [T, B, C, H, W]``; images ``[B, C, H, W]`` as
    they are.

    The one batch-first to time-first conversion: the loaders yield batch-first, every network and
    neuron of tspike_lab is time-first.
    """
    return x.transpose(0, 1) if x.dim() == 5 else x


def _device(device: torch.device | str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def shard_padding(n: int, rank: int, world_size: int) -> torch.Tensor:
    """Which entries of this rank's shard (:func:`shard_indices`) are real samples (True) or wrapped copies (False).

    A sample repeated to even out the ranks must not be counted twice in a test metric.
    """
    total = math.ceil(n / world_size) * world_size if n else 0
    return torch.arange(total)[rank:total:world_size] < n


def shard_indices(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of ``order``: padded by wrapping to a multiple of ``world_size``, then ``rank::world_size``.

    Same rule as ``torch.utils.data.DistributedSampler(drop_last=False)``: all ranks get the same count.
    """
    if world_size == 1:
        return order
    n = order.numel()
    total = math.ceil(n / world_size) * world_size
    if total > n > 0:
        pad = total - n
        order = torch.cat([order, order.repeat(math.ceil(pad / n))[:pad]])
    return order[rank:total:world_size]


class ResidentLoader:
    """Batches gathered from a device-resident tensor copy; order and augmentation seeded per (seed, epoch).

    Yields:
        ``(x, y)``: images float32 normalized ``[B, C, H, W]`` or sequences float32 ``[B, T, C, H, W]``;
        y int64 ``[B]``; both on ``device``.
    """

    def __init__(
        self,
        source: DataSource,
        split: str,
        batch_size: int,
        device: torch.device,
        augment: Augment | None,
        shuffle: bool,
        seed: int,
        epoch: int,
        rank: int,
        world_size: int,
        drop_last: bool,
    ) -> None:
        self.source = source
        self.split = split
        self.batch_size = batch_size
        self.device = device
        self.augment = augment
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.drop_last = drop_last
        x, _ = source.tensors(split)
        n = int(x.shape[0])
        if shuffle:
            g = torch.Generator().manual_seed(mix_seed("order", seed, epoch))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        self.indices = shard_indices(order, rank, world_size)
        self.keep = shard_padding(n, rank, world_size) if world_size > 1 else None

    def __len__(self) -> int:
        m = self.indices.numel()
        return m // self.batch_size if self.drop_last else math.ceil(m / self.batch_size)

    def _images(self, x: torch.Tensor, g: torch.Generator, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        aug = self.augment
        if aug is not None:
            x = random_crop(x, aug.crop_padding, g)
            if aug.flip:
                x = random_flip(x, g)
            x = random_roll(x, aug.roll, g)
            if aug.autoaugment:
                x = autoaugment(x, g)
            x = cutout(x, aug.cutout, g)  # before normalising, as the released transforms: the hole is black
        return (x.to(torch.float32).div_(255.0) - mean) / std

    def _sequences(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = x.to(torch.float32)
        aug = self.augment
        if aug is None:
            return x
        b, t, c, h, w = x.shape
        flat = x.reshape(b, t * c, h, w)
        flat = random_crop(flat, aug.crop_padding, g)
        if aug.flip:
            flat = random_flip(flat, g)
        flat = random_roll(flat, aug.roll, g)
        flat = cutout(flat, aug.cutout, g)
        return flat.reshape(b, t, c, h, w)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        xs, ys = self.source.on_device(self.split, self.device)
        idx = self.indices.to(self.device)
        g = torch.Generator(device=self.device)
        g.manual_seed(mix_seed("augment", self.seed, self.epoch, self.rank))
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.source.mean, dtype=torch.float32, device=self.device).view(shape)
        std = torch.tensor(self.source.std, dtype=torch.float32, device=self.device).view(shape)
        for k in range(len(self)):
            sel = idx[k * self.batch_size : (k + 1) * self.batch_size]
            x, y = xs[sel], ys[sel]
            x = self._sequences(x, g) if self.source.is_sequence else self._images(x, g, mean, std)
            yield x, y


class _SeededView(Dataset):
    """Wraps a Dataset so sample ``i``'s random transform draws from a generator seeded by (base, i)."""

    def __init__(self, dataset: Dataset, base_seed: int) -> None:
        self.dataset = dataset
        self.base_seed = base_seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        get = getattr(self.dataset, "get", None)
        if get is None:
            return self.dataset[index]
        return get(index, torch.Generator().manual_seed(mix_seed(self.base_seed, int(index))))


class DatasetLoader:
    """A DataLoader over a source's Dataset with batches moved to ``device``.

    Yields:
        ``(x, y)`` as produced by the Dataset (already normalized), on ``device``.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        device: torch.device,
        shuffle: bool,
        seed: int,
        epoch: int,
        rank: int,
        world_size: int,
        drop_last: bool,
        num_workers: int,
    ) -> None:
        self.device = device
        # DistributedSampler appends its wrapped copies after its (shuffled) order, as shard_padding says
        self.keep = shard_padding(len(dataset), rank, world_size) if world_size > 1 else None
        view = _SeededView(dataset, mix_seed("sample", seed, epoch))
        sampler = None
        if world_size > 1:
            sampler = DistributedSampler(view, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
            sampler.set_epoch(epoch)
        self.loader = DataLoader(
            view,
            batch_size=batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            drop_last=drop_last,
            generator=torch.Generator().manual_seed(mix_seed("order", seed, epoch)),
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def make_loader(
    source: DataSource,
    split: str,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    augment: Augment | None = None,
    shuffle: bool | None = None,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool | None = None,
    num_workers: int = 4,
) -> ResidentLoader | DatasetLoader:
    """Iterate a split of a DataSource in batches on ``device``.

    Resident sources are copied to ``device`` once (cached on the source) and batches are
    gathered, augmented and normalized there; file-based sources use a DataLoader.

    Args:
        source: a DataSource from ``load``.
        split: "train" or "test".
        batch_size: samples per batch.
        device: where batches are delivered.
        augment: augmentation to apply (None: none); pass it for training only.
        shuffle: default ``split == "train"``; the order is seeded by (seed, epoch), the same on every rank.
        seed: base seed for order and augmentation.
        epoch: epoch number (changes order and augmentation).
        rank: this process's rank in [0, world_size).
        world_size: number of processes; each rank gets a disjoint, equally long shard.
        drop_last: drop the last incomplete batch (default False).
        num_workers: DataLoader workers for file-based sources.

    Returns:
        An iterable with ``len()`` = number of batches, yielding ``(x, y)``. With ``world_size > 1``
        its ``keep`` (bool, one per sample of this rank's shard, in batch order) is False for the
        wrapped copies that even out the shards, which a metric must not count
        (``tspike_lab.train.evaluate`` does not); None in one process.

    Shape:
        x: float32 ``[B, C, H, W]`` (normalized) or ``[B, T, C, H, W]`` for sequences (not normalized);
        y: int64 ``[B]``.
    """
    if not isinstance(source, DataSource):
        raise ValueError(f"source must be a DataSource from tspike_lab.data.load, got {type(source).__name__}")
    check_split_name(split)
    _check_int("batch_size", batch_size, 1)
    _check_int("world_size", world_size, 1)
    _check_int("num_workers", num_workers, 0)
    _check_int("epoch", epoch, 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, world_size={world_size}), got {rank!r}")
    if augment is not None and not isinstance(augment, Augment):
        raise ValueError(f"augment must be an Augment or None, got {type(augment).__name__}")
    for name, value in (("shuffle", shuffle), ("drop_last", drop_last)):
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{name} must be True, False or None, got {value!r}")
    dev = _device(device)
    shuffle = (split == "train") if shuffle is None else shuffle
    drop_last = False if drop_last is None else drop_last
    if source.resident:
        if augment is not None and augment.autoaugment:
            if source.is_sequence:
                raise ValueError("augment.autoaugment=True is for images; it cannot be applied to DVS sequences")
            if source.in_channels not in (1, 3):
                raise ValueError(f"augment.autoaugment=True needs 1 or 3 channels, source has {source.in_channels}")
        return ResidentLoader(
            source, split, batch_size, dev, augment, shuffle, seed, epoch, rank, world_size, drop_last
        )
    if augment is not None:
        logger.info(
            "%s: the Dataset applies its own transforms (RandomResizedCrop + flip for train); augment=%s is not used",
            source.name,
            augment,
        )
    dataset = source.train_set if split == "train" else source.test_set
    return DatasetLoader(dataset, batch_size, dev, shuffle, seed, epoch, rank, world_size, drop_last, num_workers)
