"""Shared benchmark plumbing: timing, peak memory in fresh processes, environment, tables.

Timing: every case runs ``warmup`` times, then ``rounds`` rounds in which every peer runs
once, interleaved in a new (seeded) order each round, so load from other processes falls on
all peers alike and no peer always follows the same one; we report the best (min) and the
median of the rounds. Ratios use the min.

Peak memory (CPU): each case runs in a fresh Python process (``python <script>
--memory-case <json>``). After building inputs and model, the process resets its
resident-set high-water mark (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) and
reads ``VmRSS``; after one forward+backward (or training step) it reads ``VmHWM``. The
difference is the extra resident memory the step needed at its peak: everything the
step allocated and touched, PyTorch's and Python's alike, and nothing that existed
before it. Without ``clear_refs`` it falls back to ``ru_maxrss`` (an upper bound that
includes setup). On CUDA (``--device cuda``) every case runs in this process: the peak
is ``torch.cuda.max_memory_allocated`` over one step minus what was allocated before it,
and every timed call ends with ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# -- environment ----------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(module: str) -> str:
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - a peer that does not import is "missing"
        return f"missing ({type(e).__name__}: {e})"
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return "installed"


def environment_lines(extra_modules=()) -> list[str]:
    import torch

    from tspike_lab import kernels
    from tspike_lab.results import environment

    env = environment()
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0
    lines = [
        f"hardware: {cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"{mem_gb:.0f} GiB RAM" + (f", GPU {env['device_name']}" if env["cuda_available"] else ", no GPU"),
        ", ".join(
            [
                f"versions: python {env['python']}",
                f"torch {env['torch']}",
                f"snntorch {env['snntorch']}",
                *(f"{m} {version(m)}" for m in extra_modules),
            ]
        ),
        f"code: tspike_lab {env['git_commit'] or 'unknown'}{' (dirty)' if env['git_dirty'] else ''}; "
        f"compiled backends: {kernels.backend_report()}",
        f"command: {' '.join([*_malloc_env(), os.path.basename(sys.executable), *sys.argv])}",
        "load average (1, 5, 15 min) at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()),
    ]
    return lines


# glibc keeps freed blocks for reuse instead of unmapping them: no page faults on the
# next allocation of the same size (the default mmaps every block above 32 MiB afresh).
MALLOC_REUSE_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(2**40),
    "MALLOC_TRIM_THRESHOLD_": str(2**40),
    "MALLOC_TOP_PAD_": str(2**30),
}


def _malloc_env() -> list[str]:
    return [f"{k}={os.environ[k]}" for k in MALLOC_REUSE_ENV if k in os.environ]


def reexec_with_malloc_reuse() -> None:
    """Restart this script with :data:`MALLOC_REUSE_ENV` (glibc reads it only at start-up)."""
    if all(os.environ.get(k) == v for k, v in MALLOC_REUSE_ENV.items()):
        return
    env = dict(os.environ, **MALLOC_REUSE_ENV)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


# -- command line shared by the scripts ---------------------------------------------------------------------


def add_run_arguments(p, *, memory_repeats: int, jobs: int) -> None:
    """The options every benchmark script takes besides its own sizes and cases."""
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument(
        "--memory-repeats",
        type=int,
        default=memory_repeats,
        help=f"fresh processes per memory case, median kept (default {memory_repeats}; --quick: 1)",
    )
    p.add_argument("--jobs", type=int, default=jobs, help="memory subprocesses side by side")
    p.add_argument(
        "--malloc-reuse",
        action="store_true",
        help="time under a glibc allocator that reuses freed memory (see README); memory unaffected",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's; --quick: 1, robust on a loaded machine)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--device", default="auto", help="'auto' (cuda when available, else cpu), 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--memory-cases", default=None, help=argparse.SUPPRESS)


def resolve_device(p, value: str):
    """The torch device for ``--device``; a bad value or an absent GPU is a usage error naming both."""
    import torch

    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(value)
    except RuntimeError:
        p.error(f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    if dev.type not in ("cpu", "cuda"):
        p.error(f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {value!r}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        p.error(f"--device {value!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def synchronizer(device):
    """A function that waits for ``device`` (CUDA kernels run asynchronously), or None on the CPU."""
    import torch

    if device.type != "cuda":
        return None
    return lambda: torch.cuda.synchronize(device)


def start_run(args, memory_case) -> tuple[bool, int | None]:
    """``(done, threads)``: a ``--memory-cases`` child runs its cases and is done; otherwise restart
    under the reusing allocator if asked, and set the torch threads."""
    if args.memory_cases:
        run_memory_cases(json.loads(args.memory_cases), memory_case)
        return True, None
    if args.malloc_reuse:
        reexec_with_malloc_reuse()
    threads = args.threads or (1 if args.quick else None)
    set_threads(threads)
    return False, threads


# -- timing ---------------------------------------------------------------------------------------------------


@dataclass
class Timing:
    times: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def time_interleaved(fns: dict, *, rounds: int, warmup: int = 1, sync=None) -> dict[str, Timing]:
    """Seconds per call of each ``fns[name]()``, peers interleaved within every round, in a new order each round.

    ``sync`` (CUDA: :func:`synchronizer`) runs before the clock starts and inside the timed span
    after the call, so a call's time is the time until its kernels have finished.
    """
    sync = sync or (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out = {name: Timing() for name in fns}
    names, rng = list(fns), random.Random(0)
    for _ in range(rounds):
        # A new order every round (seeded): no peer always runs right after the same one. On this VM
        # the call after a large copy paid up to 30 % more (caches and TLB refilled).
        for name in rng.sample(names, len(names)):
            fn = fns[name]
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            out[name].times.append(time.perf_counter() - t0)
    return out


def copy_bandwidth(sizes=(256 * 2**20, 2**30), rounds: int = 10, device=None) -> dict[str, float]:
    """Bytes per second of a large float32 tensor copy, counting the read and the write.

    ``warm``: into an existing tensor (``dst.copy_(src)``), the memory system's rate;
    ``fresh``: into a new tensor (``src.clone()``), which adds the kernel's page faults;
    ``stream`` (CPU, where it compiles): :mod:`stream_copy`, non-temporal stores.
    The best over ``sizes`` (on a VM the rate moves with where the pages land).
    """
    import torch
    from stream_copy import streaming_copy

    device = device or torch.device("cpu")
    best = {"warm": 0.0, "fresh": 0.0}
    for nbytes in sizes:
        src = torch.ones(nbytes // 4, device=device)
        dst = torch.empty_like(src)
        fns = {"warm": lambda dst=dst, src=src: dst.copy_(src), "fresh": lambda src=src: src.clone()}
        stream = streaming_copy(dst, src)
        if stream is not None:
            fns["stream"] = stream
        t = time_interleaved(fns, rounds=rounds, warmup=2, sync=synchronizer(device))
        for k, v in t.items():
            best[k] = max(best.get(k, 0.0), 2 * nbytes / v.best)
        del src, dst, fns
    return best


# -- peak memory in a fresh process ---------------------------------------------------------------------------


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def measure_peak(run) -> dict:
    """In the current (fresh) process: extra resident MiB at the peak of ``run()``."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kib("VmRSS")
        run()
        peak = _status_kib("VmHWM")
        method = "VmHWM after clear_refs"
    except OSError:
        before = _status_kib("VmRSS") if os.path.exists("/proc/self/status") else 0
        run()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        method = "ru_maxrss (upper bound)"
    return {"peak_mib": max(peak - before, 0) / 1024, "method": method}


def cuda_peak(run, device) -> dict:
    """On CUDA, in this process: MiB allocated at the peak of ``run()`` beyond what existed before."""
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run()
    torch.cuda.synchronize(device)
    return {
        "peak_mib": (torch.cuda.max_memory_allocated(device) - before) / 2**20,
        "method": "torch.cuda.max_memory_allocated",
    }


def memory_in_subprocesses(
    script: Path, cases: list[dict], *, jobs: int = 2, batch: bool = False, repeats: int = 1, timeout: float = 1800
) -> list[dict]:
    """Run ``script --memory-cases <[case]>`` in fresh processes; one JSON result per case.

    One process per case, or with ``batch`` one process for all (``--quick``: faster,
    freed memory handed back with ``malloc_trim`` between cases). Jobs run side by side:
    resident memory is per process, so that does not bias the peaks. The processes use
    glibc's default allocator settings. With ``repeats`` > 1 every case runs that many
    times and the median peak is kept (a machine that reclaims cold pages, as DAMON
    does, can lower a single reading). A failed case comes back as ``{"error": ...}``.
    """
    if repeats > 1:
        runs = [memory_in_subprocesses(script, cases, jobs=jobs, batch=batch, timeout=timeout) for _ in range(repeats)]
        out = []
        for results in zip(*runs):
            peaks = [r["peak_mib"] for r in results if "peak_mib" in r]
            if not peaks:
                out.append(results[0])
                continue
            out.append({**results[0], "peak_mib": statistics.median(peaks), "peaks_mib": peaks})
        return out
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_REUSE_ENV}

    def run(group):
        cmd = [sys.executable, str(script), "--memory-cases", json.dumps(group)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
        except subprocess.TimeoutExpired:
            return [{"error": f"timed out after {timeout:.0f} s"}] * len(group)
        lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or len(lines) != len(group):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            err = {"error": f"exit {proc.returncode}: {tail[0][:200]}"}
            return lines + [err] * (len(group) - len(lines))
        return lines

    groups = [cases] if batch else [[c] for c in cases]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return [r for rs in pool.map(run, groups) for r in rs]


def set_threads(n: int | None) -> None:
    """``torch.set_num_threads(n)`` where given (``--threads``; ``--quick`` uses 1)."""
    import torch

    if n:
        torch.set_num_threads(n)


def run_memory_cases(cases: list[dict], measure_case) -> None:
    """The ``--memory-cases`` end: measure each case, print one JSON line per case."""
    import ctypes

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        trim = None
    for case in cases:
        set_threads(case.get("threads"))
        if trim is not None:
            trim(0)
        print(json.dumps(measure_case(case)), flush=True)


# -- tables ---------------------------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, rows)])


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds * 1e3:.0f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "-"
    return f"{a / b:.2f}x"
