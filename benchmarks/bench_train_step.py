"""One ResNet19 training step (forward, loss, backward, SGD), our engine against the released structure.

    python benchmarks/bench_train_step.py               # T in 2 4, batch 16, 32x32 (CPU-sized)
    python benchmarks/bench_train_step.py --quick       # tiny end-to-end run (the tests use it)
    python benchmarks/bench_train_step.py --steps 2 --batch 32 --rounds 5

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
T-averaged logits, on CPU. Ratios are given at matched precision (float32 / float32, bf16 /
bf16) and, separately, ours in bf16 against the released structure in float32.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from common import (add_run_arguments, environment_lines, markdown_table, measure_peak, memory_in_subprocesses, ms,
                    ratio, start_run, time_interleaved)

OURS = "tspike engine (auto)"
OURS_BF16 = "tspike engine + bf16 autocast"
RELEASED = "released structure + LIFAct"
RELEASED_BF16 = "released structure + LIFAct + bf16 autocast"


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
    from tspike_lab.train import cpu_bf16_reason

    return cpu_bf16_reason()


# name: (builder, channels_last, bf16 autocast, note). Ours runs as train.py runs it on a CPU:
# channels_last (image input), float32 unless TrainConfig.cpu_amp.
CASES = {
    OURS: (_ours, True, False, "train.py's CPU setting: channels_last, time folded into batch, fused LIF"),
    "tspike engine, NCHW": (_ours, False, False, "the same in the default contiguous layout"),
    "tspike engine (torch oracle LIF)": (lambda arch, T: _ours(arch, T, "torch"), True, False,
                                         "same network, autograd LIF"),
    OURS_BF16: (_ours, True, True, "TrainConfig(cpu_amp=True): bf16 autocast, the C kernel in bfloat16"),
    RELEASED: (_reference("released"), False, False, "SpikePool fold, BN3d permutes, per-step stem BN + FC"),
    RELEASED_BF16: (_reference("released"), False, True, "the same under bf16 autocast (the released "
                                                          "recipe trains with AMP)"),
    "per-step loops + LIFAct": (_reference("per_step"), False, False, "every conv / BN / pool / FC looped over T"),
    "floor: our convolutions alone": (_convs_only, True, False, "our network with LIF and BN -> identity "
                                                                "(float32): no neuron can beat this"),
}


def _case_fn(case: str, arch: str, T: int, batch: int, image: int, seed: int = 0):
    build, channels_last, bf16, _ = CASES[case]
    if bf16 and _bf16_reason() is not None:
        raise RuntimeError(_bf16_reason())
    torch.manual_seed(seed)
    model = build(arch, T).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, image, image)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def memory_case(case: dict) -> dict:
    _case_fn(case["case"], "small", 1, 2, 8)()  # load libraries and kernels before the measured step
    step = _case_fn(case["case"], case["arch"], case["T"], case["batch"], case["image"])
    return measure_peak(step)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="the small ResNet (width 8), batch 2, 8x8 images, T=2, 2 rounds: an end-to-end check")
    p.add_argument("--arch", choices=ARCHS, default=None, help="network (default resnet19)")
    p.add_argument("--steps", default=None, help="comma list of T (default 2,4)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 16)")
    p.add_argument("--image", type=int, default=None, help="image side (default 32)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per case (default 5)")
    p.add_argument("--cases", default=None, help="comma list of case names (default: all)")
    add_run_arguments(p, memory_repeats=3, jobs=1)
    args = p.parse_args(argv)
    done, threads = start_run(args, memory_case)
    if done:
        return 0

    arch = args.arch or ("small" if args.quick else "resnet19")
    steps = [int(t) for t in (args.steps or ("2" if args.quick else "2,4")).split(",")]
    batch = args.batch or (2 if args.quick else 16)
    image = args.image or (8 if args.quick else 32)
    rounds = args.rounds or (2 if args.quick else 5)
    cases = args.cases.split(",") if args.cases else list(CASES)
    unknown = set(cases) - set(CASES)
    if unknown:
        p.error(f"unknown cases {sorted(unknown)}; allowed: {list(CASES)}")

    print(f"# {arch} training step: forward + cross-entropy + backward + SGD, CPU "
          "(float32; bf16 autocast where named)\n")
    for line in environment_lines():
        print(f"- {line}")
    print(f"- batch {batch}, {image}x{image} images, 10 classes; times: best of {rounds} interleaved rounds "
          "(median in brackets); 'x ours' = case / ours\n")
    results = []
    for T in steps:
        fns, failed = {}, {}
        for case in cases:
            try:
                fns[case] = _case_fn(case, arch, T, batch, image)
            except Exception as e:  # noqa: BLE001 - reported in the table, not dropped
                failed[case] = f"{type(e).__name__}: {e}"
        timings = time_interleaved(fns, rounds=rounds, warmup=1)
        mem = {}
        if not args.no_memory:
            mcases = [{"case": c, "arch": arch, "T": T, "batch": batch, "image": image, "threads": threads}
                      for c in fns]
            mem = dict(zip(fns, memory_in_subprocesses(Path(__file__), mcases, jobs=args.jobs, batch=args.quick,
                                                          repeats=1 if args.quick else args.memory_repeats)))
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
            rows.append([case, f"{ms(t.best)} ({ms(t.median)})", ratio(t.best, ours_t),
                         f"{peak:.0f}" if peak is not None else m.get("error", "-"),
                         ratio(peak, ours_m) if (ours_m or 0) >= 1 else "-", CASES[case][3]])
            results.append({"T": T, "case": case, "best_s": t.best, "median_s": t.median, "peak_mib": peak})
        print(f"## T = {T}\n")
        print(markdown_table(["case", "step ms", "x ours", "peak MiB", "x ours", "notes"], rows))
        print()
        for name, (mine, theirs) in {"float32": (OURS, RELEASED), "bf16 autocast": (OURS_BF16, RELEASED_BF16),
                                     "ours bf16 vs released float32": (OURS_BF16, RELEASED)}.items():
            if mine in timings and theirs in timings:
                line = f"- {name}: released / ours = {ratio(timings[theirs].best, timings[mine].best)} time"
                pm, pt = mem.get(mine, {}).get("peak_mib"), mem.get(theirs, {}).get("peak_mib")
                if pm and pt:
                    line += f", ours / released = {ratio(pm, pt)} peak memory"
                print(line)
        floor = "floor: our convolutions alone"
        if floor in timings and RELEASED in timings:
            print(f"- the most any float32 engine with our convolutions could gain over the released structure: "
                  f"{ratio(timings[RELEASED].best, timings[floor].best)}")
        print()
        sys.stdout.flush()
    print("- load average (1, 5, 15 min) at the end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    if args.json:
        args.json.write_text(json.dumps({"batch": batch, "image": image, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
