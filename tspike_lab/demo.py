"""``make demo``: our capacity experiment (not a table of the paper): binary vs ternary spikes on the
embedded digits, swept over network width.

The paper's argument is capacity (Eq. 6): a binary C×H×W spike map carries at most C·H·W bits, a
ternary one C·H·W·log2 3. The argument predicts a gap where capacity binds (a narrow network) and
none where it does not (a comfortable width on an easy task). The demo trains arch "small" at
widths 1..16 and T=1, 2 with binary, ternary and trainable ternary spikes, several seeds each,
through :func:`tspike_lab.reproduce.run_table` (table "capacity", profile "cpu"), and reports what it measures:
every difference below is computed from the runs, paired by seed.

    python -m tspike_lab.demo                    # about two minutes on two CPU cores
    python -m tspike_lab.demo --epochs 4 --seeds 0,1,2 --widths 1,4,16
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import reproduce, viz
from .frontend import make_parser, run_guarded
from .info import capacity_bits
from .models import NEURONS
from .results import mean_std

__all__ = ["DemoResult", "run_demo", "summarize", "paired_difference", "main"]

_LABEL = {name: kind.label for name, kind in NEURONS.items()}


@dataclass
class DemoResult:
    """What :func:`run_demo` made: the table run folder, its rows and record, the printed text, the figure."""

    run_dir: Path
    rows: list[dict[str, Any]]
    record: dict[str, Any]
    text: str
    figure_path: Path | None
    wall_time_s: float


def paired_difference(
    record: Mapping[str, Any], width: int | None, num_steps: int, neuron: str, baseline: str = "binary"
) -> tuple[float, float, int] | None:
    """Mean and std over seeds of ``top1(neuron) - top1(baseline)`` (percentage points), paired by seed.

    Returns:
        ``(mean, std, n)`` (std NaN for one seed), or None when no seed has both runs.
    """
    by = {
        (r["neuron"], r["seed"]): r["top1"]
        for r in record["runs"]
        if r["width"] == width and r["num_steps"] == num_steps and r["status"] == "complete" and r["top1"] is not None
    }
    diffs = [by[(neuron, s)] - by[(baseline, s)] for (n, s) in by if n == neuron and (baseline, s) in by]
    if not diffs:
        return None
    mean, std = mean_std(diffs)
    return mean, std, len(diffs)


def _pp(d: tuple[float, float, int] | None) -> str:
    if d is None:
        return "—"
    mean, std, n = d
    return f"{mean:+.1f} ± {std:.1f}" if math.isfinite(std) else f"{mean:+.1f} (n={n})"


def summarize(record: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """The demo's printed report: accuracy per (T, neuron) × width, capacity bounds, paired gaps, conclusion."""
    p = record["params"]
    widths = sorted({r["width"] for r in rows if r["width"] is not None}) or [None]
    steps = sorted({r["num_steps"] for r in rows})
    neurons = [n for n in NEURONS if any(r["neuron"] == n for r in rows)]
    cell = {(r["width"], r["num_steps"], r["neuron"]): r for r in rows}
    col = 16
    out = [
        f"{record['title']}",
        f"{record['datasets']['digits']['label']}; arch small; {p['epochs']} epochs, batch {p['batch_size']}, "
        f"lr {p['lr']}; "
        f"test top-1 %, mean ± std over seeds {p['seeds']}",
        "",
    ]
    head = "width".ljust(22) + "".join(str(w).rjust(col) for w in widths)
    for t in steps:
        out.append(f"T = {t}")
        out.append(head)
        for n in neurons:
            line = f"  {_LABEL.get(n, n)}".ljust(22)
            for w in widths:
                r = cell.get((w, t, n))
                shown = (
                    reproduce.fmt_mean_std(
                        r["mean"], r["std"], None if r["std"] is not None else r["n_seeds"], digits=1
                    )
                    if r
                    else "—"
                )
                line += shown.rjust(col)
            out.append(line)
        for n in neurons:
            if n == "binary" or "binary" not in neurons:
                continue
            line = f"  {_LABEL.get(n, n)} − binary, pp".ljust(22)
            if len(line) > 22:
                out.append(line.rstrip())
                line = "".ljust(22)
            out.append(line + "".join(_pp(paired_difference(record, w, t, n)).rjust(col) for w in widths))
        out.append("")
    if widths != [None]:
        # arch small: the stem's spike map is width x 8 x 8 on 8x8 digits (stride 1)
        out.append("capacity bound of the stem's spike map (Eq. 6), bits: binary / ternary")
        out.append("width".ljust(22) + "".join(str(w).rjust(col) for w in widths))
        out.append(
            "".ljust(22)
            + "".join(
                f"{capacity_bits((w, 8, 8), 'binary'):.0f} / {capacity_bits((w, 8, 8), 'ternary'):.0f}".rjust(col)
                for w in widths
            )
        )
        out.append("")
    out.append("What the runs say (computed from the numbers above, paired by seed; 'clear' = |mean| > 2 std):")
    for t in steps:
        for n in [n for n in neurons if n != "binary"] if "binary" in neurons else []:
            diffs = {w: paired_difference(record, w, t, n) for w in widths}
            known = {w: d for w, d in diffs.items() if d is not None}
            if not known:
                continue
            lo, hi = min(known, key=lambda w: w or 0), max(known, key=lambda w: w or 0)
            clear = [w for w, (m, s, k) in known.items() if math.isfinite(s) and abs(m) > 2 * s]
            sign = {w: ("+" if known[w][0] > 0 else "−") for w in clear}
            text = (
                f"  T={t}: {_LABEL.get(n, n)} − binary at width {lo}: {_pp(known[lo])} pp"
                + (f"; at width {hi}: {_pp(known[hi])} pp" if hi != lo else "")
                + (
                    "; clear at width(s) " + ", ".join(f"{w} ({sign[w]})" for w in sorted(clear, key=lambda w: w or 0))
                    if clear
                    else "; clear at no width"
                )
            )
            out.append(text)
    out.append("")
    out.append(
        f"hardware: {record['hardware']}; commit {str(record['environment'].get('git_commit'))[:12]}"
        f"{' (dirty)' if record['environment'].get('git_dirty') else ''}; "
        f"{len(record['runs'])} training runs in {record['wall_time_s']:.0f} s"
    )
    return "\n".join(out)


def run_demo(
    out_dir: str | os.PathLike = "runs/demo",
    *,
    widths: Sequence[int] | None = None,
    num_steps: Sequence[int] | None = None,
    neurons: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    max_steps_per_epoch: int | None = None,
    workers: int | None = None,
    figure: bool = True,
) -> DemoResult:
    """Run the width sweep (table "capacity", profile "cpu") and build its report and figure.

    Args:
        out_dir: parent of the new table run folder.
        widths, num_steps, neurons, seeds, epochs, batch_size, max_steps_per_epoch: override the
            "cpu" profile (``reproduce.PROFILES["capacity"]["cpu"]``); None keeps it.
        workers: training runs side by side, one CPU thread each (None: one per core, at most 8).
        figure: write ``figure.html`` (plotly, self-contained) into the run folder.
    Returns:
        A :class:`DemoResult`.
    """
    t0 = time.perf_counter()
    if workers is None:
        workers = max(1, min(os.cpu_count() or 1, 8))
    params = reproduce.validate_params(
        "capacity",
        profile="cpu",
        widths=widths,
        num_steps=num_steps,
        neurons=neurons,
        seeds=seeds,
        epochs=epochs,
        batch_size=batch_size,
        max_steps_per_epoch=max_steps_per_epoch,
        out_dir=str(out_dir),
        device="cpu",
        workers=workers,
    )
    run_dir = reproduce.run_table("capacity", **params)
    record = reproduce.load_run(run_dir)
    rows = reproduce.aggregate(run_dir)
    figure_path = None
    if figure:
        figure_path = run_dir / "figure.html"
        viz.plot_table(rows).write_html(str(figure_path), include_plotlyjs=True)
    return DemoResult(
        run_dir=run_dir,
        rows=rows,
        record=record,
        text=summarize(record, rows),
        figure_path=figure_path,
        wall_time_s=time.perf_counter() - t0,
    )


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tspike_lab.demo``: run the demo and print its table, the run folder and the figure."""
    parser = make_parser("python -m tspike_lab.demo", __doc__)
    parser.add_argument("--out-dir", default="runs/demo", help="parent of the new run folder")
    parser.add_argument("--widths", type=_ints, default=None, help="e.g. 1,2,4,8,16")
    parser.add_argument("--num-steps", type=_ints, default=None, help="time steps T, e.g. 1,2")
    parser.add_argument("--seeds", type=_ints, default=None, help="e.g. 0,1,2")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="parallel training runs (default: one per core)")
    ns = parser.parse_args(argv)

    def work() -> int:
        result = run_demo(
            ns.out_dir, widths=ns.widths, num_steps=ns.num_steps, seeds=ns.seeds, epochs=ns.epochs, workers=ns.workers
        )
        print(result.text)
        print(f"run folder: {result.run_dir}")
        print(f"figure:     {result.figure_path}")
        print(f"wall time:  {result.wall_time_s:.0f} s")
        return 0

    return run_guarded("python -m tspike_lab.demo", work)


if __name__ == "__main__":
    sys.exit(main())
