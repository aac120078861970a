"""One ResNet19 training step (forward, loss, backward, SGD), our engine against the released structure.

    python benchmarks/bench_train_step.py               # T in 2 4, batch 64 (CPU; 128 on a GPU), 32x32
    python benchmarks/bench_train_step.py --quick       # tiny end-to-end run (the tests use it)
    python benchmarks/bench_train_step.py --steps 2 --batch 32 --rounds 5
    python benchmarks/bench_train_step.py --device cuda --steps 2 --epoch --data-dir DIR   # GPU: a CIFAR-10 epoch

Cases, all with identical layer shapes (ResNet19: 128/256/512, [3, 3, 2] blocks):

- ours: ``build_model("resnet19", neuron="ternary")`` ("small" with --quick) as train.py runs it
  on a CPU: channels_last, stateless layers on the time-folded batch, stem computed once for a
  static image, the fused LIF; also in NCHW, with the oracle neuron, and under bf16 autocast
  (``TrainConfig(cpu_amp=True)``; needs a CPU with AVX512-BF16 or AMX, else reported missing);
- the released structure (:mod:`reference_resnet`, ``layout="released"``) with the
  released neuron (:mod:`lifact`), in float32 and under bf16 autocast (its recipe uses AMP);
- per-step loops (``layout="per_step"``): every conv / BN / pool / FC in a Python loop over T;
- a floor: our network with every LIF and BatchNorm replaced by identity, its convolutions alone.

Each step: ``SGD(lr=0.1, momentum=0.9, weight_decay=1e-4)``, cross-entropy on the
T-averaged logits, on ``--device`` (default: CUDA when available). Ratios are given at matched
precision (float32 / float32, bf16 / bf16) and, separately, ours in bf16 against the released
structure in float32.

``--epoch`` also times one pass over a training set (default 50,000 images: CIFAR-10's) for
every case, fed by the same loader (the engine's: data resident on the device, random crop
and flip there, normalized): real CIFAR-10 with ``--data-dir``, else random pixels of its
shape (a convolution's time does not depend on pixel values; the table says which).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from common import (
    add_run_arguments,
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

OURS = "tspike engine (auto)"
OURS_BF16 = "tspike engine + bf16 autocast"
RELEASED = "released structure + LIFAct"
RELEASED_BF16 = "released structure + LIFAct + bf16 autocast"
# The ratio lines under each table: (ours, released) at matched precision, then ours bf16 vs released float32.
PAIRS = {
    "float32": (OURS, RELEASED),
    "bf16 autocast": (OURS_BF16, RELEASED_BF16),
    "ours bf16 vs released float32": (OURS_BF16, RELEASED),
}


ARCHS = ("resnet19", "small")  # small: width 8, for --quick


def _ours(arch, T, backend="auto"):
    from tspike_lab.models import build_model

    kw = {"width": 8} if arch == "small" else {}
    return build_model(arch, neuron="ternary", num_classes=10, num_steps=T, backend=backend, **kw)


def _reference(layout):
    def make(arch, T):
        import reference_resnet

        if arch == "small":
            return reference_resnet.reference_small(8, num_classes=10, step=T, layout=layout)
        return reference_resnet.reference_resnet19(num_classes=10, step=T, layout=layout)

    return make


def _convs_only(arch, T):
    """Our network with every LIF and BatchNorm replaced by identity: what its convolutions cost."""
    from torch import nn

    from tspike_lab.neurons import SpikingLayer

    model = _ours(arch, T)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, (SpikingLayer, nn.BatchNorm2d)):
                setattr(module, name, nn.Identity())
    return model


def _bf16_reason():
    from tspike_lab.hardware import cpu_bf16_reason

    return cpu_bf16_reason()


# name: (builder, channels_last, bf16 autocast, note). Ours runs as train.py runs it: channels_last
# (image input); float32 on a CPU unless TrainConfig.cpu_amp, bf16 autocast on CUDA (TrainConfig.amp).
CASES = {
    OURS: (_ours, True, False, "channels_last, time folded into batch, fused LIF (train.py's CPU default)"),
    "tspike engine, NCHW": (_ours, False, False, "the same in the default contiguous layout"),
    "tspike engine (torch oracle LIF)": (
        lambda arch, T: _ours(arch, T, "torch"),
        True,
        False,
        "same network, autograd LIF",
    ),
    OURS_BF16: (_ours, True, True, "the same under bf16 autocast (train.py's CUDA default; CPU: cpu_amp=True)"),
    RELEASED: (_reference("released"), False, False, "SpikePool fold, BN3d permutes, per-step stem BN + FC"),
    RELEASED_BF16: (
        _reference("released"),
        False,
        True,
        "the same under bf16 autocast (the released recipe trains with AMP)",
    ),
    "per-step loops + LIFAct": (_reference("per_step"), False, False, "every conv / BN / pool / FC looped over T"),
    "floor: our convolutions alone": (
        _convs_only,
        True,
        False,
        "our network with LIF and BN -> identity (float32): no neuron can beat this",
    ),
}


def _trainer(case: str, arch: str, T: int, seed: int = 0, device=torch.device("cpu")):
    """``step(x, y)``: one training step of ``case``'s network on ``device``; ``prepare(x)`` lays out a batch."""
    build, channels_last, bf16, _ = CASES[case]
    if bf16 and device.type == "cpu" and _bf16_reason() is not None:
        raise RuntimeError(_bf16_reason())
    torch.manual_seed(seed)
    model = build(arch, T).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def prepare(x):
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step, prepare


def _case_fn(case: str, arch: str, T: int, batch: int, image: int, seed: int = 0, device=torch.device("cpu")):
    step, prepare = _trainer(case, arch, T, seed, device)
    x = prepare(torch.randn(batch, 3, image, image).to(device))
    y = torch.randint(0, 10, (batch,)).to(device)
    return lambda: step(x, y)


def _epoch_source(data_dir, images: int, image: int):
    """CIFAR-10 from ``data_dir`` (its canonical folder or archive, or an archive of image folders),
    else random uint8 pixels and labels of CIFAR-10's shape; ``(source, description)``."""
    from tspike_lab.data import DataSource, load

    if data_dir is not None:
        path = Path(data_dir)
        name = "imagefolder" if path.is_file() and not path.name.startswith("cifar-10") else "cifar10"
        source = load(name, root=path, download=False)
        return source, f"{name} from {path} ({source.train_x.shape[0]} training images)"
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (images, 3, image, image), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (images,), generator=g)
    source = DataSource(
        "cifar10",
        10,
        3,
        (image, image),
        [str(i) for i in range(10)],
        (0.5,) * 3,
        (0.25,) * 3,
        train_x=x,
        train_y=y,
        test_x=x[:1],
        test_y=y[:1],
    )
    return source, f"random pixels of CIFAR-10's shape ({images} x 3 x {image} x {image}), no data set given"


def _time_epoch(case, arch, T, batch, source, images, device, sync) -> dict:
    """Seconds for one pass over ``images`` training images (after 3 warm-up steps), fed by the engine's loader."""
    import time

    from tspike_lab.data import Augment, make_loader

    step, prepare = _trainer(case, arch, T, device=device)
    loader = make_loader(source, "train", batch_size=batch, device=device, augment=Augment(), seed=0)
    for i, (x, y) in enumerate(loader):  # cudnn autotuning, Triton compilation, allocator warm-up
        step(prepare(x), y)
        if i == 2:
            break
    steps = max(1, images // batch)
    sync = sync or (lambda: None)
    sync()
    t0 = time.perf_counter()
    done = 0
    for x, y in loader:
        loss = step(prepare(x), y)
        done += x.shape[0]
        if done >= steps * batch:
            break
    sync()
    seconds = time.perf_counter() - t0
    if not torch.isfinite(loss):
        raise RuntimeError(f"the loss became {loss.item()} during the timed epoch")
    return {"seconds": seconds, "images": done, "images_per_s": done / seconds}


def _epoch_table(args, cases, arch, T, batch, image, device, sync) -> list[dict]:
    """Time one epoch per case, print the table and the matched-precision ratios; the JSON rows."""
    images = args.epoch_images or (8 if args.quick else 50000)
    source, what = _epoch_source(args.data_dir, images, image)
    images = min(images, source.train_x.shape[0])
    epochs, rows, out = {}, [], []
    for case in cases:
        try:
            epochs[case] = _time_epoch(case, arch, T, batch, source, images, device, sync)
        except Exception as e:  # noqa: BLE001 - reported in the table, not dropped
            rows.append([case, "failed", "-", "-", f"{type(e).__name__}: {e}"[:90]])
            continue
    ours = epochs.get(OURS, {}).get("seconds")
    for case in cases:
        if case in epochs:
            e = epochs[case]
            rows.append(
                [case, f"{e['seconds']:.2f}", f"{e['images_per_s']:.0f}", ratio(e["seconds"], ours), CASES[case][3]]
            )
            out.append({"T": T, "case": case, "epoch": e})
    print(f"## T = {T}: one epoch, {max(1, images // batch) * batch} images in batches of {batch}\n")
    print(f"- data: {what}; the engine's loader for every case (random crop 4 + flip on the device)\n")
    print(markdown_table(["case", "epoch s", "images/s", "x ours", "notes"], rows))
    print()
    for name, (mine, theirs) in PAIRS.items():
        if mine in epochs and theirs in epochs:
            print(f"- epoch, {name}: released / ours = {ratio(epochs[theirs]['seconds'], epochs[mine]['seconds'])}")
    print()
    sys.stdout.flush()
    return out


def memory_case(case: dict) -> dict:
    _case_fn(case["case"], "small", 1, 2, 8)()  # load libraries and kernels before the measured step
    step = _case_fn(case["case"], case["arch"], case["T"], case["batch"], case["image"])
    return measure_peak(step)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="the small ResNet (width 8), batch 2, 8x8 images, T=2, 2 rounds: an end-to-end check",
    )
    p.add_argument("--arch", choices=ARCHS, default=None, help="network (default resnet19)")
    p.add_argument("--steps", default=None, help="comma list of T (default 2,4)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 64 on a CPU, 128 on a GPU)")
    p.add_argument("--image", type=int, default=None, help="image side (default 32)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per case (default 5)")
    p.add_argument("--cases", default=None, help="comma list of case names (default: all)")
    p.add_argument("--epoch", action="store_true", help="also time one epoch per case (see the module docstring)")
    p.add_argument(
        "--epoch-images",
        type=int,
        default=None,
        help="images in the timed epoch (default 50000, CIFAR-10's training set; --quick: 8)",
    )
    p.add_argument(
        "--data-dir", default=None, help="CIFAR-10 for --epoch: its folder or archive, or an archive of image folders"
    )
    add_run_arguments(p, memory_repeats=3, jobs=1)
    args = p.parse_args(argv)
    done, threads = start_run(args, memory_case)
    if done:
        return 0
    device = resolve_device(p, args.device)
    sync = synchronizer(device)
    if args.epoch_images is not None and args.epoch_images < 1:
        p.error(f"--epoch-images must be a positive number of images, got {args.epoch_images}")
    if args.data_dir is not None and not Path(args.data_dir).exists():
        p.error(f"--data-dir {args.data_dir!r} does not exist")

    arch = args.arch or ("small" if args.quick else "resnet19")
    steps = [int(t) for t in (args.steps or ("2" if args.quick else "2,4")).split(",")]
    batch = args.batch or (2 if args.quick else 64 if device.type == "cpu" else 128)
    if batch < 1:
        p.error(f"--batch must be >= 1, got {batch}")
    image = args.image or (8 if args.quick else 32)
    rounds = args.rounds or (2 if args.quick else 5)
    cases = args.cases.split(",") if args.cases else list(CASES)
    unknown = set(cases) - set(CASES)
    if unknown:
        p.error(f"unknown cases {sorted(unknown)}; allowed: {list(CASES)}")

    where = "CPU" if device.type == "cpu" else f"CUDA ({torch.cuda.get_device_name(device)})"
    print(
        f"# {arch} training step: forward + cross-entropy + backward + SGD, {where} "
        "(float32; bf16 autocast where named)\n"
    )
    for line in environment_lines():
        print(f"- {line}")
    print(
        f"- batch {batch}, {image}x{image} images, 10 classes; times: best of {rounds} interleaved rounds "
        "(median in brackets); 'x ours' = case / ours\n"
    )
    results = []
    for T in steps:
        fns, failed = {}, {}
        for case in cases:
            try:
                fns[case] = _case_fn(case, arch, T, batch, image, device=device)
            except Exception as e:  # noqa: BLE001 - reported in the table, not dropped
                failed[case] = f"{type(e).__name__}: {e}"
        timings = time_interleaved(fns, rounds=rounds, warmup=1, sync=sync)
        mem = {}
        if not args.no_memory and device.type == "cuda":
            del fns  # free the timed cases' models before measuring one at a time
            mem = {c: cuda_peak(_case_fn(c, arch, T, batch, image, device=device), device) for c in timings}
        elif not args.no_memory:
            mcases = [
                {"case": c, "arch": arch, "T": T, "batch": batch, "image": image, "threads": threads} for c in fns
            ]
            mem = dict(
                zip(
                    fns,
                    memory_in_subprocesses(
                        Path(__file__),
                        mcases,
                        jobs=args.jobs,
                        batch=args.quick,
                        repeats=1 if args.quick else args.memory_repeats,
                    ),
                )
            )
        ours_t = timings[OURS].best if OURS in timings else None
        ours_m = mem.get(OURS, {}).get("peak_mib")
        rows = []
        for case in cases:
            if case in failed:
                rows.append([case, "missing", "-", "missing", "-", failed[case][:90]])
                results.append({"T": T, "case": case, "missing": failed[case]})
                continue
            t, m = timings[case], mem.get(case, {})
            peak = m.get("peak_mib")
            rows.append(
                [
                    case,
                    f"{ms(t.best)} ({ms(t.median)})",
                    ratio(t.best, ours_t),
                    f"{peak:.0f}" if peak is not None else m.get("error", "-"),
                    ratio(peak, ours_m) if (ours_m or 0) >= 1 else "-",
                    CASES[case][3],
                ]
            )
            results.append({"T": T, "case": case, "best_s": t.best, "median_s": t.median, "peak_mib": peak})
        print(f"## T = {T}\n")
        print(markdown_table(["case", "step ms", "x ours", "peak MiB", "x ours", "notes"], rows))
        print()
        for name, (mine, theirs) in PAIRS.items():
            if mine in timings and theirs in timings:
                line = f"- {name}: released / ours = {ratio(timings[theirs].best, timings[mine].best)} time"
                pm, pt = mem.get(mine, {}).get("peak_mib"), mem.get(theirs, {}).get("peak_mib")
                if pm and pt:
                    line += f", ours / released = {ratio(pm, pt)} peak memory"
                print(line)
        floor = "floor: our convolutions alone"
        if floor in timings and RELEASED in timings:
            print(
                f"- the most any float32 engine with our convolutions could gain over the released structure: "
                f"{ratio(timings[RELEASED].best, timings[floor].best)}"
            )
        print()
        sys.stdout.flush()
        if args.epoch:
            results += _epoch_table(args, [c for c in cases if c not in failed], arch, T, batch, image, device, sync)
    print("- load average (1, 5, 15 min) at the end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    if args.json:
        args.json.write_text(
            json.dumps({"device": str(device), "batch": batch, "image": image, "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
