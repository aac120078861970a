"""make demo's core: our width-swept capacity experiment, its paired differences and its computed report."""

import math
import re

import pytest
import torch

from tspike_lab import demo, reproduce


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(neuron, seed, top1, width=1, num_steps=1):
    return dict(
        key=f"{neuron}-{seed}",
        arch="small",
        width=width,
        neuron=neuron,
        num_steps=num_steps,
        seed=seed,
        status="complete",
        top1=top1,
    )


def test_paired_difference_pairs_runs_by_seed():
    record = {
        "runs": [
            _run("binary", 0, 50.0),
            _run("binary", 1, 60.0),
            _run("binary", 2, 55.0),
            _run("ternary", 0, 70.0),
            _run("ternary", 1, 75.0),
            _run("ternary", 2, 80.0),
            _run("ternary", 3, 99.0),
        ]
    }  # seed 3 has no binary partner: left out
    mean, std, n = demo.paired_difference(record, 1, 1, "ternary")
    # differences 20, 15, 25
    assert (mean, n) == (20.0, 3) and std == pytest.approx(5.0)
    assert demo.paired_difference(record, 2, 1, "ternary") is None
    one = {"runs": [_run("binary", 0, 50.0), _run("ternary", 0, 52.5)]}
    m, s, k = demo.paired_difference(one, 1, 1, "ternary")
    assert (m, k) == (2.5, 1) and math.isnan(s)


@pytest.mark.slow  # trains a width sweep
def test_run_demo_at_a_tiny_size_prints_a_table_and_a_conclusion_computed_from_its_runs(tmp_path):
    result = demo.run_demo(
        tmp_path, widths=[1, 2], num_steps=[1], seeds=[0, 1, 2], epochs=1, max_steps_per_epoch=2, workers=2
    )
    assert result.run_dir.parent == tmp_path and result.figure_path.is_file()
    assert "plotly" in result.figure_path.read_text()[:200000]
    record = reproduce.load_run(result.run_dir)
    assert record["status"] == "complete" and len(record["runs"]) == 2 * 3 * 3
    assert record["launcher"] == "workers=2" and record["profile"] == "cpu"
    rows = result.rows
    assert {(r["width"], r["neuron"]) for r in rows} == {
        (w, n) for w in (1, 2) for n in ("binary", "ternary", "trainable_ternary")
    }
    assert all(r["n_seeds"] == 3 for r in rows)
    text = result.text
    for r in rows:
        assert reproduce.fmt_mean_std(r["mean"], r["std"], digits=1) in text
    for width in (1, 2):
        mean, std, n = demo.paired_difference(record, width, 1, "ternary")
        assert f"{mean:+.1f} ± {std:.1f}" in text
    m1, s1, _ = demo.paired_difference(record, 1, 1, "ternary")
    m2, s2, _ = demo.paired_difference(record, 2, 1, "ternary")
    assert f"T=1: ternary − binary at width 1: {m1:+.1f} ± {s1:.1f} pp; at width 2: {m2:+.1f} ± {s2:.1f} pp" in text
    clear = [w for w, (m, s) in ((1, (m1, s1)), (2, (m2, s2))) if abs(m) > 2 * s]
    line = next(x for x in text.splitlines() if x.startswith("  T=1: ternary − binary"))
    assert line.endswith("clear at no width") == (not clear)
    assert "64 / 101" in text and "128 / 203" in text  # capacity bounds of the 1x8x8 and 2x8x8 stem maps
    assert re.search(r"18 training runs in \d+ s", text)


def test_the_demo_profile_sweeps_width_at_two_time_steps_over_three_seeds():
    runs = reproduce.plan("capacity", profile="cpu")
    assert sorted({r.config.width for r in runs}) == [1, 2, 4, 8, 16] and {r.config.num_steps for r in runs} == {1, 2}
    assert len({r.config.seed for r in runs}) >= 3 and {r.config.dataset for r in runs} == {"digits"}
    assert {"binary", "ternary", "trainable_ternary"} <= {r.config.neuron for r in runs}
    assert not reproduce.TABLES["capacity"].paper  # our experiment, not the paper's Table 1
