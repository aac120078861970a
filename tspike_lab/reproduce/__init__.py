"""Reproduce the paper's tables: the tables as data, profiles and plans, table runs, records.

    >>> from tspike_lab import reproduce
    >>> reproduce.plan("table2", profile="paper")[:1]            # the training runs a profile trains
    >>> params = reproduce.validate_params("table2", profile="smoke")   # ConfigError names a bad parameter
    >>> reproduce.probe_data("table2", **params)                   # the data, found before anything else
    >>> cost = reproduce.estimate("table2", **params)               # cost before work, ~20 s of timing here
    >>> reproduce.check_cost("table2", cost, params["max_hours"])   # refuses what would not end today
    >>> run_dir = reproduce.run_table("table2", **params)          # <out_dir>/table2-<time>-<hex>/
    >>> print(reproduce.paper_table(reproduce.aggregate(run_dir)))  # ours beside the paper, its layout

Modules: :mod:`.paper` (the paper's Tables 1-5 and Figure 2, cell by cell), :mod:`.plan`
(profiles, :func:`plan` and its :class:`PlannedRun`, :func:`validate_params`), :mod:`.run` (:func:`run_table`,
:func:`estimate`), :mod:`.records` (``metrics.json``, :func:`aggregate`, :func:`paper_table`).
Figures are drawn by :func:`tspike_lab.viz.plot_table`.
"""

import json

from .. import data
from ..frontend import make_parser, run_guarded
from .paper import BASELINES, CITATION, ENERGY, ENERGY_CONSTANTS, FIGURE2, TABLES, paper_cell, paper_numbers
from .plan import (
    PARAM_FIELDS,
    PARAM_HELP,
    PARAMS,
    PLUMBING_DATASET,
    PROFILES,
    RECIPES,
    PlannedRun,
    default_out_dir,
    params_from,
    plan,
    repository_root,
    run_key,
    shipped_results,
    validate_params,
)
from .records import (
    COMPARED,
    METRICS_SCHEMA,
    ROW_SCHEMA,
    RUN_SCHEMA,
    STD_CONVENTION,
    aggregate,
    describe_setup,
    find_runs,
    fmt_duration,
    fmt_mean_std,
    fmt_per_class,
    load_run,
    paper_markdown,
    paper_table,
    validate_metrics,
)
from .released import step_bn_effect
from .run import balanced_test, check_cost, estimate, estimate_from_flops, probe_data, run_table, test_batch

__all__ = [
    "TABLES",
    "PROFILES",
    "RECIPES",
    "PARAMS",
    "PARAM_FIELDS",
    "PARAM_HELP",
    "PlannedRun",
    "PLUMBING_DATASET",
    "CITATION",
    "ENERGY",
    "ENERGY_CONSTANTS",
    "FIGURE2",
    "BASELINES",
    "COMPARED",
    "STD_CONVENTION",
    "METRICS_SCHEMA",
    "RUN_SCHEMA",
    "ROW_SCHEMA",
    "paper_numbers",
    "paper_cell",
    "plan",
    "validate_params",
    "params_from",
    "run_key",
    "default_out_dir",
    "shipped_results",
    "repository_root",
    "run_table",
    "probe_data",
    "estimate",
    "check_cost",
    "estimate_from_flops",
    "test_batch",
    "load_run",
    "validate_metrics",
    "find_runs",
    "aggregate",
    "paper_table",
    "paper_markdown",
    "fmt_mean_std",
    "fmt_duration",
    "fmt_per_class",
    "describe_setup",
    "step_bn_effect",
    "main",
]


def main(argv=None) -> int:
    """``python -m tspike_lab.reproduce aggregate DIR [DIR ...]``: print every run's table as markdown;
    ``python -m tspike_lab.reproduce step-bn --data-dir D``: the folded-BatchNorm departure, measured."""
    parser = make_parser("python -m tspike_lab.reproduce", "Aggregate table runs into the paper's tables")
    sub = parser.add_subparsers(dest="command", required=True)
    agg = sub.add_parser("aggregate", help="print the tables of every run under the given folders")
    agg.add_argument("folders", nargs="+", help="out_dir folders or table run folders")
    agg.add_argument("--json", action="store_true", help="print the rows as JSON instead")
    eff = sub.add_parser(
        "step-bn", help="per-step vs folded BatchNorm at initialisation, on class-balanced test images"
    )
    eff.add_argument("--dataset", default="cifar10")
    eff.add_argument("--data-dir", default=None, help="folder or archive (None: the data default)")
    eff.add_argument("--per-class", type=int, default=8, help="test images per class")
    eff.add_argument("--cases", default="resnet19:2,resnet20:2,resnet20:4,vgg16:2", help="arch:T,...")
    ns = parser.parse_args(argv)
    work = {"aggregate": lambda: _aggregate(ns), "step-bn": lambda: _step_bn(ns)}[ns.command]
    return run_guarded(f"python -m tspike_lab.reproduce {ns.command}", work)


def _aggregate(ns) -> int:
    rows = aggregate(ns.folders)  # every folder at once: a record reached twice counts once
    print(json.dumps(rows, indent=2) if ns.json else paper_table(rows))
    return 0


def _step_bn(ns) -> int:
    source = data.probe(data.describe(ns.dataset, ns.data_dir))
    x, _ = balanced_test(source, ns.per_class * source.num_classes)
    print("| arch | T | images | max abs logit diff | logit std | spikes differing |\n|---|---|---|---|---|---|")
    for case in ns.cases.split(","):
        arch, t = case.split(":")
        r = step_bn_effect(x, arch, int(t))
        print(
            f"| {arch} | {t} | {r['images']} | {r['max_logit_diff']:.4f} | {r['logit_std']:.4f} | "
            f"{100 * r['spikes_differing']:.2f}% of {r['spikes'] / 1e6:.1f} M |"
        )
    return 0
