"""Forward+backward time and peak memory of one multi-step LIF layer, ours against its peers.

    python benchmarks/bench_neuron.py                   # CIFAR-sized and large layers, T in 1 2 4 8
    python benchmarks/bench_neuron.py --quick           # a tiny end-to-end run (the tests use it)
    python benchmarks/bench_neuron.py --sizes 64x128x16x16 --steps 4 --rounds 20
    python benchmarks/bench_neuron.py --device cuda     # on a GPU: our Triton kernels, HBM floor
    python benchmarks/bench_neuron.py --sizes cifar --steps 4 --rounds 40 --no-memory --no-network \
        --peers "$(python benchmarks/bench_neuron.py --list-stepped)"   # the stepped drop-ins only

Every peer gets the same input ``x [T, B, C, H, W]`` (float32, requires grad) and the same
output gradient, in one process; a peer that does not import is listed as "missing".
The memory-traffic floor is derived in benchmarks/README.md: the bytes a fused ternary
neuron must move in forward+backward over the copy bandwidth measured here (on a GPU:
device memory, a copy on the GPU; ours then runs the Triton kernels).

The snnTorch-style drop-ins (``TernaryLeaky``, ``BinaryLeaky``, and ``TernaryLeaky`` forced onto
its op-by-op general path) stepped in a Python loop are also compared with ``snn.Leaky`` stepped
the same way: a line under each table (same rounds), and one training iteration of snnTorch's
tutorial-5 network (784-1000-10, 25 steps, batch 128, Adam) with each neuron class swapped in,
timed in interleaved rounds of its own (``--no-network`` skips it).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path

import torch
from common import (
    add_run_arguments,
    copy_bandwidth,
    cuda_peak,
    environment_lines,
    markdown_table,
    measure_peak,
    memory_in_subprocesses,
    ms,
    ratio,
    resolve_device,
    start_run,
    synchronizer,
    time_interleaved,
)
from stream_copy import streaming_copy

SIZES = {"cifar": (64, 128, 16, 16), "large": (32, 256, 32, 32), "tiny": (2, 4, 6, 6)}
OURS = "tspike MultiStepLIF (auto)"
TRAINED = "tspike MultiStepLIF (auto; trainable a)"
KERNEL = "tspike kernels.lif_seq (auto)"
FLOOR = "memory-traffic floor"
FLOOR_STREAM = "memory-traffic floor, streaming copy"
PREALLOCATED = "tspike C kernel (preallocated outputs)"
SNN_STEPPED = "snntorch Leaky stepped"
STEPPED = {  # our drop-ins stepped in a Python loop, each compared with SNN_STEPPED
    "tspike TernaryLeaky stepped": "TernaryLeaky",
    "tspike BinaryLeaky stepped": "BinaryLeaky",
    "tspike TernaryLeaky stepped (general path)": "TernaryLeaky, general path",
}

# Every builder takes (T, device) and returns a function of x [T, B, C, H, W].


def _ours(T, device):
    from tspike_lab.neurons import MultiStepLIF

    return MultiStepLIF("ternary").to(device)


def _ours_trained(T, device):
    from tspike_lab.neurons import MultiStepLIF

    return MultiStepLIF("ternary", learn_graded_spikes_factor=True).to(device)


def _kernel(T, device):
    from tspike_lab import kernels

    return lambda x: kernels.lif_seq(x)[0]


def _oracle(T, device):
    from tspike_lab.neurons import MultiStepLIF

    return MultiStepLIF("ternary", backend="torch").to(device)


def _stepped(neuron):
    def run(x):
        mem = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            spk, mem = neuron(x[t], mem)
            out.append(spk)
        return torch.stack(out)

    return run


def _ternary_leaky(T, device):
    from tspike_lab import TernaryLeaky

    return _stepped(TernaryLeaky().to(device))


def _binary_leaky(T, device):
    from tspike_lab import BinaryLeaky

    return _stepped(BinaryLeaky().to(device))


def general_path(cls):
    """``cls`` (TernaryLeaky or BinaryLeaky) with the fused step turned off: every step runs op by op."""
    return type(f"{cls.__name__}GeneralPath", (cls,), {"fused_step": False})


def _ternary_leaky_general(T, device):
    from tspike_lab import TernaryLeaky

    return _stepped(general_path(TernaryLeaky)().to(device))


def _snntorch(T, device):
    import snntorch as snn

    return _stepped(snn.Leaky(beta=0.25, threshold=0.5, reset_mechanism="zero").to(device))


def _sj_node(cls_name):
    def make(T, device):
        from spikingjelly.activation_based import neuron

        if not hasattr(neuron, cls_name):
            import spikingjelly

            raise ImportError(f"spikingjelly {getattr(spikingjelly, '__version__', '?')} has no {cls_name}")
        cls = getattr(neuron, cls_name)
        # beta = 1 - 1/tau = 0.25 with decay_input=False: H = V - V/tau + X.
        kw = dict(tau=4 / 3, decay_input=False, v_threshold=0.5, v_reset=0.0, step_mode="m")
        if "backend" in inspect.signature(cls.__init__).parameters:
            kw["backend"] = "torch"
        node = cls(**kw).to(device)

        def run(x):
            node.reset()
            return node(x)

        return run

    return make


def _lifact(T, device):
    from lifact import LIFAct

    return LIFAct(T).to(device)


PEERS = {
    OURS: (_ours, "ternary, STE, zero reset, fixed a = 1; the layer users build"),
    TRAINED: (_ours_trained, "the same with a trainable a (dL/da reduced in the kernel's backward)"),
    KERNEL: (_kernel, "ternary, kernels.lif_seq without an amplitude"),
    PREALLOCATED: (None, "the same C kernel writing into buffers allocated once (no allocator, no autograd)"),
    "tspike MultiStepLIF (torch oracle)": (_oracle, "ternary, backend='torch': autograd through every step"),
    "tspike TernaryLeaky stepped": (_ternary_leaky, "ternary, our snnTorch-compatible neuron in a Python loop"),
    "tspike BinaryLeaky stepped": (_binary_leaky, "binary, the same (paper defaults: STE, reset not detached)"),
    "tspike TernaryLeaky stepped (general path)": (
        _ternary_leaky_general,
        "TernaryLeaky without its fused step: op by op, as before it",
    ),
    SNN_STEPPED: (_snntorch, "binary, snnTorch default ATan surrogate, reset 'zero'"),
    "spikingjelly LIFNode (m)": (_sj_node("LIFNode"), "binary, multi-step, torch backend, Sigmoid surrogate"),
    "spikingjelly TernaryLIFNode (m)": (_sj_node("TernaryLIFNode"), "ternary, multi-step, Sigmoid surrogate"),
    "paper LIFAct (released code)": (_lifact, "ternary, transcription of the released LIFAct"),
}


def floor_bytes_per_element(T: int) -> int:
    """Bytes a fused ternary LIF (STE, zero reset through the graph) must move per element, fwd+bwd.

    16 = read x, write b, read dL/db, write dL/dx (float32); 2 = write then read the
    1-byte spike+window code; 4 = the membranes the reset gradient needs at steps
    0..T-2, written then read (8 (T-1)/T) or x read again for a replay (4): the lesser.
    """
    return 16 + 2 + (4 if T > 1 else 0)


def _c_preallocated(x: torch.Tensor, g: torch.Tensor):
    """The C kernel's forward and backward calls writing into buffers allocated once: its own speed."""
    import ctypes

    from tspike_lab.kernels import cpu, make_spec

    spec = make_spec(
        beta=0.25, threshold=0.5, kind="ternary", reset_mechanism="zero", spike_grad=None, detach_reset=False
    )
    lib = cpu.library()  # raises (reported as missing) where no C compiler works
    x, g = x.detach().contiguous(), g.contiguous()
    T, N = x.shape[0], x[0].numel()
    b, gx = torch.empty_like(x), torch.empty_like(x)
    code, u = torch.empty((T, N), dtype=torch.uint8), torch.empty((max(T - 1, 1), N))
    args = cpu._args(spec, T, N, N, T - 1, T * N, 4)

    def step():
        lib.lif_fwd_f32(x.data_ptr(), b.data_ptr(), code.data_ptr(), u.data_ptr(), None, ctypes.byref(args))
        lib.lif_bwd_f32(g.data_ptr(), code.data_ptr(), u.data_ptr(), gx.data_ptr(), None, None, ctypes.byref(args))

    return step


def _inputs(T: int, shape, seed: int = 0, device=torch.device("cpu")):
    """``(x, g)``: the input (requires grad) and the output gradient every peer gets."""
    torch.manual_seed(seed)
    x = (torch.randn(T, *shape) * 0.6).to(device).requires_grad_(True)
    return x, torch.randn(T, *shape).to(device)


def _case_fn(peer: str, T: int, shape, seed: int = 0, device=torch.device("cpu"), inputs=None):
    # The same tensors for every peer in a run (``inputs``): on a VM, two copies of the same values
    # can sit in memory that streams at different rates.
    x, g = inputs if inputs is not None else _inputs(T, shape, seed, device)
    if peer == PREALLOCATED:
        if device.type != "cpu":
            raise RuntimeError("the C kernel runs on the CPU (on CUDA, ours is the Triton kernels)")
        return _c_preallocated(x, g)
    fwd = PEERS[peer][0](T, device)

    def step():
        out = fwd(x)
        out.backward(g)
        x.grad = None

    return step


NETWORK_CASES = {  # neuron class of a tutorial-5 network, by case name (imported when built)
    "snntorch Leaky": ("snntorch", "Leaky", False),
    "tspike TernaryLeaky": ("tspike_lab", "TernaryLeaky", False),
    "tspike BinaryLeaky": ("tspike_lab", "BinaryLeaky", False),
    "tspike TernaryLeaky (general path)": ("tspike_lab", "TernaryLeaky", True),
    "tspike BinaryLeaky (general path)": ("tspike_lab", "BinaryLeaky", True),
}
NETWORK_SIZES = {"tutorial": (128, 784, 1000, 10, 25), "tiny": (4, 16, 8, 4, 3)}  # batch, in, hidden, out, steps


def network_iteration(case: str, size: str = "tutorial", seed: int = 0):
    """One training iteration of snnTorch's tutorial-5 network with the case's neuron class, as a function.

    Two ``Linear`` layers, each followed by ``cls(beta=0.95)`` (the class swapped in, its other
    defaults its own), stepped ``num_steps`` times from ``init_leaky()``; loss = sum over steps of
    the cross-entropy of the output membrane; Adam (lr 5e-4). Random inputs of MNIST's shape.
    """
    import importlib

    from torch import nn

    module, name, general = NETWORK_CASES[case]
    cls = getattr(importlib.import_module(module), name)
    cls = general_path(cls) if general else cls
    batch, n_in, hidden, n_out, num_steps = NETWORK_SIZES[size]
    torch.manual_seed(seed)
    fc1, lif1, fc2, lif2 = nn.Linear(n_in, hidden), cls(beta=0.95), nn.Linear(hidden, n_out), cls(beta=0.95)
    params = [p for m in (fc1, lif1, fc2, lif2) for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=5e-4)
    x, y = torch.rand(batch, n_in), torch.randint(0, n_out, (batch,))

    def step():
        mem1, mem2 = lif1.init_leaky(), lif2.init_leaky()
        loss = 0
        for _ in range(num_steps):
            spk1, mem1 = lif1(fc1(x), mem1)
            spk2, mem2 = lif2(fc2(spk1), mem2)
            loss = loss + nn.functional.cross_entropy(mem2, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def stepped_summary(timings: dict) -> str | None:
    """The line comparing our stepped drop-ins with ``snn.Leaky`` stepped (same rounds), or None."""
    if SNN_STEPPED not in timings:
        return None
    ref = timings[SNN_STEPPED]
    parts = [
        f"{label} {ratio(timings[peer].best, ref.best)} (median {ratio(timings[peer].median, ref.median)})"
        for peer, label in STEPPED.items()
        if peer in timings
    ]
    if not parts:
        return None
    return "- stepped drop-in / snn.Leaky stepped, same rounds (below 1: ours is faster): " + "; ".join(parts)


def network_table(size: str, rounds: int) -> tuple[str, list[dict]]:
    """The markdown table of one training iteration per network case, interleaved rounds, and the results."""
    fns, missing = {}, {}
    for case in NETWORK_CASES:
        try:
            fns[case] = network_iteration(case, size)
        except Exception as e:  # noqa: BLE001 - reported, not dropped
            missing[case] = f"{type(e).__name__}: {e}"
    timings = time_interleaved(fns, rounds=rounds, warmup=1)
    ref = timings.get("snntorch Leaky")
    rows, results = [], []
    for case in NETWORK_CASES:
        if case in missing:
            rows.append([case, "missing", "-", "-", missing[case][:90]])
            results.append({"network": size, "case": case, "missing": missing[case]})
            continue
        t = timings[case]
        rows.append(
            [
                case,
                f"{ms(t.best)} ({ms(t.median)})",
                ratio(t.best, ref.best if ref else None),
                ratio(t.median, ref.median if ref else None),
                "the neuron class swapped into the same network",
            ]
        )
        results.append({"network": size, "case": case, "best_s": t.best, "median_s": t.median})
    table = markdown_table(["case", "iteration ms", "x snn.Leaky (best)", "x snn.Leaky (median)", "notes"], rows)
    return table, results


def _parse_size(s: str):
    if s in SIZES:
        return s, SIZES[s]
    dims = tuple(int(v) for v in s.lower().split("x"))
    if len(dims) != 4:
        raise argparse.ArgumentTypeError(f"size must be a preset {sorted(SIZES)} or BxCxHxW, got {s!r}")
    return s, dims


def memory_case(case: dict) -> dict:
    T, shape = case["T"], tuple(case["shape"])
    _case_fn(case["peer"], 1, (1, 2, 3, 3))()  # load libraries, build kernels, start threads
    step = _case_fn(case["peer"], T, shape)
    return measure_peak(step)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, T in 1 2, 2 rounds: an end-to-end check")
    p.add_argument("--sizes", default=None, help="comma list of presets (cifar, large, tiny) or BxCxHxW")
    p.add_argument("--steps", default=None, help="comma list of T (default 1,2,4,8)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per peer (default 10)")
    p.add_argument("--peers", default=None, help="comma list of peer names (default: all)")
    p.add_argument("--no-network", action="store_true", help="skip the tutorial-5 network's training iteration")
    p.add_argument(
        "--network-rounds",
        type=int,
        default=None,
        help="interleaved rounds of the network iteration (default 20; --quick: 2)",
    )
    p.add_argument(
        "--list-stepped",
        action="store_true",
        help="print the stepped peers (snn.Leaky and our drop-ins) as a --peers value and exit",
    )
    add_run_arguments(p, memory_repeats=1, jobs=2)
    args = p.parse_args(argv)
    if args.list_stepped:
        print(",".join([SNN_STEPPED, *STEPPED]))
        return 0
    done, threads = start_run(args, memory_case)
    if done:
        return 0
    device = resolve_device(p, args.device)
    sync = synchronizer(device)
    where = "CPU" if device.type == "cpu" else f"CUDA ({torch.cuda.get_device_name(device)})"

    sizes = [_parse_size(s) for s in (args.sizes or ("tiny" if args.quick else "cifar,large")).split(",")]
    steps = [int(t) for t in (args.steps or ("1,2" if args.quick else "1,2,4,8")).split(",")]
    rounds = args.rounds or (2 if args.quick else 10)
    peers = args.peers.split(",") if args.peers else list(PEERS)
    unknown = set(peers) - set(PEERS)
    if unknown:
        p.error(f"unknown peers {sorted(unknown)}; allowed: {list(PEERS)}")

    copy_sizes = (16 * 2**20,) if args.quick else (256 * 2**20, 2**30)
    bw = copy_bandwidth(copy_sizes, device=device)
    print(f"# Multi-step LIF layer: forward+backward, float32, {where}\n")
    for line in environment_lines(["spikingjelly"]):
        print(f"- {line}")
    print(
        f"- copy bandwidth (read+write, best of {' and '.join(f'{n // 2**20} MiB' for n in copy_sizes)} copies): "
        f"{bw['warm'] / 1e9:.1f} GB/s into an existing tensor"
        + (f" ({bw['stream'] / 1e9:.1f} GB/s with streaming stores)" if "stream" in bw else "")
        + f", {bw['fresh'] / 1e9:.1f} GB/s into a new one "
        + ("(page faults included)" if device.type == "cpu" else "(from the caching allocator)")
    )
    copy_rate = max(bw["warm"], bw.get("stream", 0.0))
    print(
        f"- times: best of {rounds} interleaved rounds (median in brackets), ms; "
        "'x ours' = peer / ours (above 1: ours is faster or smaller)\n"
    )

    results = []
    for size_name, shape in sizes:
        for T in steps:
            fns, missing = {}, {}
            inputs = _inputs(T, shape, device=device)
            for peer in peers:
                try:
                    fns[peer] = _case_fn(peer, T, shape, device=device, inputs=inputs)
                except Exception as e:  # noqa: BLE001 - not installed, or fails to build: reported, not dropped
                    missing[peer] = f"{type(e).__name__}: {e}"
            n = T * shape[0] * shape[1] * shape[2] * shape[3]
            # The floor, timed in the same rounds as the peers: a copy (into an existing tensor)
            # that reads and writes the floor's bytes, so the machine's state at that moment
            # (other tenants, frequency) falls on the floor and the peers alike.
            half = floor_bytes_per_element(T) * n // 8  # float32 elements read = written
            # Two copies: torch's copy_ and one with streaming stores (where it compiles); the faster
            # is the floor, so a slow copy routine cannot flatter the peers.
            src, dst = torch.ones(half, device=device), torch.ones(half, device=device)
            fns[FLOOR] = lambda dst=dst, src=src: dst.copy_(src)
            stream = streaming_copy(dst, src)
            if stream is not None:
                fns[FLOOR_STREAM] = stream
            timings = time_interleaved(fns, rounds=rounds, warmup=1, sync=sync)
            fns.pop(FLOOR)
            fns.pop(FLOOR_STREAM, None)
            copies = {name: timings[name].best for name in (FLOOR, FLOOR_STREAM) if name in timings}
            floor_name = min(copies, key=copies.get)
            floor = copies[floor_name]
            del src, dst, stream
            mem = {}
            if not args.no_memory and device.type == "cuda":
                for peer in fns:  # the caching allocator's peak, in this process
                    if peer != PREALLOCATED:
                        mem[peer] = cuda_peak(_case_fn(peer, T, shape, device=device, inputs=inputs), device)
            elif not args.no_memory:
                cases = [
                    {"peer": peer, "T": T, "shape": list(shape), "threads": threads}
                    for peer in fns
                    if peer != PREALLOCATED
                ]  # its buffers exist before the measured step
                peaks = memory_in_subprocesses(
                    Path(__file__),
                    cases,
                    jobs=args.jobs,
                    batch=args.quick,
                    repeats=1 if args.quick else args.memory_repeats,
                )
                mem = dict(zip([c["peer"] for c in cases], peaks))
            ours_t = timings[OURS].best if OURS in timings else None
            ours_m = mem.get(OURS, {}).get("peak_mib")
            rows = []
            for peer in peers:
                if peer in missing:
                    rows.append([peer, "missing", "-", "missing", "-", missing[peer][:90]])
                    results.append({"size": size_name, "shape": shape, "T": T, "peer": peer, "missing": missing[peer]})
                    continue
                t = timings[peer]
                m = mem.get(peer, {})
                peak = m.get("peak_mib")
                rows.append(
                    [
                        peer,
                        f"{ms(t.best)} ({ms(t.median)})",
                        ratio(t.best, ours_t),
                        f"{peak:.0f}" if peak is not None else m.get("error", "-"),
                        ratio(peak, ours_m) if (ours_m or 0) >= 1 else "-",
                        PEERS[peer][1],
                    ]
                )
                results.append(
                    {
                        "size": size_name,
                        "shape": shape,
                        "T": T,
                        "peer": peer,
                        "best_s": t.best,
                        "median_s": t.median,
                        "peak_mib": peak,
                    }
                )
            kernel_t = timings[KERNEL].best if KERNEL in timings else None
            pre_t = timings[PREALLOCATED].best if PREALLOCATED in timings else None
            for name, t in copies.items():  # one row per copy; the faster one is the floor
                how = "streaming stores" if name == FLOOR_STREAM else "torch copy_"
                rows.append(
                    [
                        f"{'memory-traffic floor' if name == floor_name else 'slower copy'} "
                        f"({floor_bytes_per_element(T)} B/elem, {how})",
                        f"{ms(t)} ({ms(timings[name].median)})",
                        ratio(t, ours_t),
                        "-",
                        "-",
                        f"a copy of those bytes, same rounds ({floor_bytes_per_element(T) * n / t / 1e9:.0f} "
                        f"GB/s): ours {ratio(ours_t, t)}, kernel alone {ratio(kernel_t, t)}, "
                        f"preallocated {ratio(pre_t, t)}",
                    ]
                )
            # The same bytes at the header's copy bandwidth (large copies, measured once at the start).
            header_floor = floor_bytes_per_element(T) * n / copy_rate
            rows.append(
                [
                    f"the same at the header's {copy_rate / 1e9:.0f} GB/s",
                    ms(header_floor),
                    ratio(header_floor, ours_t),
                    "-",
                    "-",
                    f"floor bytes / copy bandwidth: ours {ratio(ours_t, header_floor)}, "
                    f"kernel alone {ratio(kernel_t, header_floor)}, preallocated {ratio(pre_t, header_floor)}",
                ]
            )
            results.append(
                {
                    "size": size_name,
                    "shape": shape,
                    "T": T,
                    "peer": "floor",
                    "best_s": floor,
                    "copies_s": copies,
                    "header_floor_s": header_floor,
                }
            )
            print(f"## {size_name}: B, C, H, W = {', '.join(map(str, shape))}; T = {T} ({n / 1e6:.1f} M elements)\n")
            print(markdown_table(["peer", "fwd+bwd ms", "x ours", "peak MiB", "x ours", "notes"], rows))
            summary = stepped_summary(timings)
            if summary:
                print(f"\n{summary}")
            print()
            sys.stdout.flush()
    if not args.no_network and device.type == "cpu":
        size = "tiny" if args.quick else "tutorial"
        batch, n_in, hidden, n_out, num_steps = NETWORK_SIZES[size]
        n_rounds = args.network_rounds or (2 if args.quick else 20)
        what = "snnTorch tutorial 5" if size == "tutorial" else "tutorial 5's network, shrunk"
        print(
            f"## A small snnTorch network, one training iteration: {n_in}-{hidden}-{n_out}, {num_steps} steps, "
            f"batch {batch} ({what}), float32\n"
        )
        print(
            f"- times: best of {n_rounds} interleaved rounds (median in brackets), ms; "
            "'x snn.Leaky' = case / snn.Leaky (below 1: faster than snn.Leaky)\n"
        )
        table, net_results = network_table(size, n_rounds)
        print(table)
        print()
        results.extend(net_results)
    print("- load average (1, 5, 15 min) at the end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "bandwidth": bw, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
