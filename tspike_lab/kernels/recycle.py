"""Page-aligned blocks for large CPU outputs, taken back when the last tensor on a block dies.

glibc maps every block above 32 MiB afresh, and the first touch of fresh pages cost up to
~7.5 ms per 32 MiB on our benchmark machine (against ~0.5 ms to write them). A
:class:`Recycler` keeps the blocks of dead outputs, up to a cap, and hands them to the next
output of the same size.
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref

import torch

from ..errors import ConfigError

__all__ = ["Recycler", "RECYCLE_MIN_BYTES", "DEFAULT_CAP_MB", "env_int"]

RECYCLE_MIN_BYTES = 32 * 2**20  # glibc's largest mmap threshold: smaller blocks come back from its own pools
DEFAULT_CAP_MB = 1024


def env_int(name: str, default: int, *, unit: str = "", strict: bool = True) -> int:
    """The whole number >= 0 the environment variable ``name`` holds (``default`` when unset or empty).

    Raises:
        ConfigError naming the variable, its value and what is allowed (``strict=False``: returns
        ``default`` instead, for values read at import time; :func:`tspike_lab.train.train` (before a
        run starts) and the kernel's first use read them strictly).
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        if not strict:
            return default
        what = f"a whole number of {unit}" if unit else "a whole number"
        raise ConfigError(
            f"environment variable {name} must be {what}, got {text!r} (0 or more); fix or unset it",
            field=name,
            value=text,
            allowed=f"{what} >= 0",
        )
    return value


def _unmap(block: mmap.mmap) -> None:
    """Unmap ``block``; one a tensor still points into (exported) is left to the garbage collector."""
    try:
        block.close()
    except BufferError:
        pass


class Recycler:
    """Large outputs in page-aligned blocks, kept for reuse when their tensors die, up to ``cap_bytes``.

    Free blocks wait oldest first; past the cap the oldest are unmapped, so blocks of sizes no
    longer asked for (another T, another batch) make room for the current ones. ``close()`` (or
    leaving a ``with`` block) unmaps every free block; after it, outputs are plain allocations and
    blocks still in use are unmapped when their tensors die.

    Args:
        cap_bytes: the most bytes kept for reuse; 0 turns recycling off.
        min_bytes: outputs smaller than this are plain ``torch.empty_strided`` allocations.
    """

    def __init__(self, cap_bytes: int = DEFAULT_CAP_MB * 2**20, min_bytes: int = RECYCLE_MIN_BYTES):
        for name, value in (("cap_bytes", cap_bytes), ("min_bytes", min_bytes)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an int, got {value!r}")
        self.cap_bytes = cap_bytes
        self.min_bytes = max(min_bytes, 1)
        self._free: list[tuple[int, mmap.mmap]] = []  # (bytes, block), oldest first
        self._held = 0
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> Recycler:
        """A recycler capped at ``$TSPIKE_RECYCLE_MB`` MiB (default 1024; 0 turns it off)."""
        return cls(cap_bytes=env_int("TSPIKE_RECYCLE_MB", DEFAULT_CAP_MB, unit="MiB") * 2**20)

    @property
    def held_bytes(self) -> int:
        """Bytes of free blocks kept for reuse."""
        return self._held

    @property
    def closed(self) -> bool:
        return self._closed

    def empty_strided(self, size, stride, dtype) -> torch.Tensor:
        """``torch.empty_strided(size, stride, dtype=dtype)`` on the CPU, in a recycled block where large."""
        extent = 1 + sum((n - 1) * st for n, st in zip(size, stride)) if all(size) else 0
        nbytes = extent * dtype.itemsize
        if self.cap_bytes <= 0 or nbytes < self.min_bytes or self._closed:
            return torch.empty_strided(size, stride, dtype=dtype)
        block = None
        with self._lock:
            for i in range(len(self._free) - 1, -1, -1):  # the most recently freed block of this size
                if self._free[i][0] == nbytes:
                    block = self._free.pop(i)[1]
                    self._held -= nbytes
                    break
        if block is None:
            try:
                block = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
            except OSError:  # out of address space or memory: let torch's allocator try, and report, as usual
                self.clear()
                return torch.empty_strided(size, stride, dtype=dtype)
        view = memoryview(block)
        base = torch.frombuffer(view, dtype=dtype, count=extent)
        done = weakref.finalize(view, self._give_back, block, nbytes)  # fires when the storage lets go
        done.atexit = False  # at exit the process unmaps everything; a block still in use must not be closed
        return base.as_strided(size, stride)

    def _give_back(self, block: mmap.mmap, nbytes: int) -> None:
        evicted = []
        with self._lock:
            if self._closed:
                evicted.append(block)
            else:
                self._free.append((nbytes, block))
                self._held += nbytes
            while self._held > self.cap_bytes and self._free:
                n, old = self._free.pop(0)
                self._held -= n
                evicted.append(old)
        for old in evicted:
            _unmap(old)

    def clear(self) -> None:
        """Unmap every block kept for reuse (the recycler stays open)."""
        with self._lock:
            blocks = [b for _, b in self._free]
            self._free.clear()
            self._held = 0
        for block in blocks:
            _unmap(block)

    def close(self) -> None:
        """Unmap every free block and keep none from now on."""
        with self._lock:
            self._closed = True
        self.clear()

    def __enter__(self) -> Recycler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"holding {self._held} bytes"
        return f"Recycler(cap_bytes={self.cap_bytes}, min_bytes={self.min_bytes}, {state})"
