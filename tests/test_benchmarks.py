"""The benchmark scripts run end to end at a tiny size, and their peers are what they claim to be."""

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_neuron  # noqa: E402
import bench_train_step  # noqa: E402
from lifact import LIFAct  # noqa: E402
from reference_resnet import reference_resnet19, reference_small  # noqa: E402


def _run_script(name, *args, hide=()):
    """Run benchmarks/<name> in a fresh interpreter; modules in ``hide`` fail to import there."""
    code = (
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(BENCH)!r})\n"
        f"for m in {list(hide)!r}: sys.modules[m] = None\n"
        f"sys.argv = [{name!r}, *{list(args)!r}]\n"
        f"runpy.run_path({str(BENCH / name)!r}, run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _rows(out):
    return {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| peer") and not line.startswith("| case")
    }


@pytest.mark.slow  # runs a benchmark script
def test_neuron_benchmark_runs_and_reports_an_absent_peer_as_missing():
    out = _run_script("bench_neuron.py", "--quick", hide=["spikingjelly"])
    assert "hardware:" in out and "versions:" in out and "copy bandwidth" in out
    assert out.count("## tiny:") == 2  # T = 1 and T = 2
    rows = _rows(out)
    for peer in bench_neuron.PEERS:
        assert peer in rows, peer
    for peer in ("spikingjelly LIFNode (m)", "spikingjelly TernaryLIFNode (m)"):
        assert rows[peer][0] == "missing" and "No module named" in rows[peer][-1]
    ours = rows[bench_neuron.OURS]
    assert ours[1] == "1.00x" and float(ours[0].split()[0]) > 0 and ours[2].isdigit()
    assert any(name.startswith("memory-traffic floor") for name in rows)
    # the stepped drop-ins against snn.Leaky stepped, in the same rounds, under each table
    summaries = [line for line in out.splitlines() if line.startswith("- stepped drop-in / snn.Leaky stepped")]
    assert len(summaries) == 2 and all(label in summaries[0] for label in bench_neuron.STEPPED.values())
    # one training iteration of the (shrunk) tutorial-5 network per neuron class
    assert "## A small snnTorch network, one training iteration: 16-8-4, 3 steps, batch 4" in out
    for case in bench_neuron.NETWORK_CASES:
        assert float(rows[case][0].split()[0]) > 0, case
    assert rows["snntorch Leaky"][1] == "1.00x"


def test_the_stepped_peers_list_is_a_peers_value():
    out = _run_script("bench_neuron.py", "--list-stepped")
    assert out.strip().split(",") == [bench_neuron.SNN_STEPPED, *bench_neuron.STEPPED]
    assert set(out.strip().split(",")) <= set(bench_neuron.PEERS)


def test_the_general_path_variant_never_takes_the_fused_step():
    import tspike_lab as tl

    lif = bench_neuron.general_path(tl.TernaryLeaky)()
    spk, mem = lif(torch.randn(3, 4, requires_grad=True), None)
    assert type(mem.grad_fn).__name__ != "LIFStepCPUBackward" and isinstance(lif, tl.TernaryLeaky)


@pytest.mark.slow  # runs a benchmark script
def test_train_step_benchmark_runs_every_case_with_time_and_peak_memory():
    out = _run_script("bench_train_step.py", "--quick")
    assert "## T = 2" in out and "hardware:" in out
    rows = _rows(out)
    assert set(rows) == set(bench_train_step.CASES)
    bf16 = bench_train_step._bf16_reason() is None
    for case, cells in rows.items():
        if not bf16 and "bf16" in case:
            assert cells[0] == "missing" and "BF16" in cells[-1]
            continue
        assert float(cells[0].split()[0]) > 0 and cells[2].isdigit()
    assert "- float32: released / ours = " in out
    assert "- the most any float32 engine with our convolutions could gain" in out


def _clamp_gradient_at_its_bound() -> float:
    """d clamp(x, -1, 1) / dx at x = 1 in the torch at hand: 1.0 up to torch 2.13, 0.0 from 2.14."""
    x = torch.tensor(1.0, requires_grad=True)
    torch.clamp(x, -1, 1).backward()
    return float(x.grad)


def test_the_released_lifact_transcription_is_our_default_ternary_neuron():
    from tspike_lab.neurons import MultiStepLIF

    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 5, 5) * 0.7
    # Planted at t = 0, where u_0 = x_0: the threshold (|u| = 0.5) and the STE window's edge (|u / V_th| = 1).
    x.view(-1)[:4] = torch.tensor([0.5, -0.5, 1.0, -1.0])
    edge = torch.zeros(x.shape, dtype=torch.bool)
    edge.view(-1)[2:4] = True
    g = torch.randn(x.shape)
    grads = []
    for neuron in (LIFAct(4), MultiStepLIF("ternary")):
        xi = x.clone().requires_grad_(True)
        out = neuron(xi)
        (out * g).sum().backward()
        grads.append((out.detach(), xi.grad))
    (out_released, gx_released), (out_ours, gx_ours) = grads
    assert torch.equal(out_released, out_ours)
    torch.testing.assert_close(gx_released[~edge], gx_ours[~edge], rtol=1e-5, atol=1e-6)
    # At |u / V_th| = 1 ours is the paper's text, ds/du = 1 where |u / V_th| <= 1, whatever the torch
    # version: there dL/dx_0 = dL/db_0 = G_0 - (g_1 * beta * u_0) * b_0 (both fire: the direct path is 0).
    u0, b0 = x[0].view(-1)[2:4], out_ours[0].view(-1)[2:4]
    expected = g[0].view(-1)[2:4] + (-(gx_ours[1].view(-1)[2:4] * (0.25 * u0))) * b0
    assert torch.equal(b0, torch.tensor([1.0, -1.0]))
    assert torch.equal(gx_ours[edge], expected) and (expected != 0).all()
    # The released LIFAct takes clamp's gradient at its bound, which changed between torch versions.
    assert torch.equal(gx_released[edge], expected * _clamp_gradient_at_its_bound())


@pytest.mark.parametrize("layout", ["released", "per_step"])
def test_the_reference_networks_have_our_layer_shapes(layout):
    from tspike_lab.models import build_model

    def shapes(m):
        return Counter(tuple(p.shape) for p in m.parameters())

    ours = build_model("resnet19", neuron="ternary", num_classes=10, num_steps=2)
    assert shapes(reference_resnet19(num_classes=10, step=2, layout=layout)) == shapes(ours)
    ours_small = build_model("small", neuron="ternary", num_classes=10, num_steps=2, width=8)
    small = reference_small(8, num_classes=10, step=2, layout=layout)
    assert shapes(small) == shapes(ours_small)
    assert small(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_the_traffic_floor_counts_the_bytes_the_neuron_must_move():
    # T = 1: x, b, dL/db, dL/dx (4 B each) + the 1-byte code written and read; from T = 2 on,
    # 4 more bytes for the membranes the reset gradient needs.
    assert [bench_neuron.floor_bytes_per_element(t) for t in (1, 2, 4, 8)] == [18, 22, 22, 22]


def test_a_bf16_case_on_a_cpu_without_native_bf16_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(bench_train_step, "_bf16_reason", lambda: "this CPU has neither AVX512-BF16 nor AMX")
    with pytest.raises(RuntimeError, match="AVX512-BF16"):
        bench_train_step._case_fn(bench_train_step.OURS_BF16, "small", 2, 2, 8)
    assert callable(bench_train_step._case_fn(bench_train_step.OURS, "small", 2, 2, 8))


@pytest.mark.slow  # runs a benchmark script
def test_the_train_step_benchmark_times_one_epoch_per_case_from_a_cifar10_folder(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_data import make_cifar_archive

    from tspike_lab.data import load

    monkeypatch.setenv("TSPIKE_DATA", str(tmp_path / "cache"))
    archive, md5, _ = make_cifar_archive(tmp_path, n=3)  # 15 training images in the canonical layout
    load("cifar10", root=archive, md5=md5)  # verified and extracted next to the archive
    cases = [bench_train_step.OURS, bench_train_step.RELEASED]
    out = _run_script(
        "bench_train_step.py",
        "--quick",
        "--epoch",
        "--no-memory",
        "--device",
        "cpu",
        "--cases",
        ",".join(cases),
        "--data-dir",
        str(tmp_path / "cifar-10-batches-py"),
    )
    assert "## T = 2: one epoch, 8 images in batches of 2" in out
    assert "data: cifar10 from" in out and "(15 training images)" in out
    epoch_rows = [line for line in out.split("one epoch", 1)[1].splitlines() if line.startswith("| ")][1:]
    assert [row.split("|")[1].strip() for row in epoch_rows] == cases
    for row in epoch_rows:
        seconds, per_s = (float(c) for c in row.split("|")[2:4])
        assert seconds > 0 and per_s > 0
    assert "- epoch, float32: released / ours = " in out


@pytest.mark.parametrize("script", ["bench_neuron.py", "bench_train_step.py"])
def test_a_bad_device_is_refused_before_any_work_naming_the_value(script, capsys):
    module = bench_neuron if script == "bench_neuron.py" else bench_train_step
    with pytest.raises(SystemExit) as e:
        module.main(["--quick", "--device", "tpu"])
    assert (
        e.value.code == 2 and "--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'" in capsys.readouterr().err
    )
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            module.main(["--quick", "--device", "cuda"])
        assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_both_benchmarks_run_on_a_gpu_with_ours_on_the_triton_kernels():
    from tspike_lab.kernels import triton_lif

    out = _run_script("bench_neuron.py", "--quick", "--device", "cuda")
    assert "float32, CUDA (" in out
    rows = _rows(out)
    assert float(rows[bench_neuron.OURS][0].split()[0]) > 0 and float(rows[bench_neuron.OURS][2]) >= 0
    assert rows[bench_neuron.PREALLOCATED][0] == "missing"
    if triton_lif.available():
        from tspike_lab import kernels

        spec = kernels.make_spec(
            beta=0.25, threshold=0.5, kind="ternary", reset_mechanism="zero", spike_grad=None, detach_reset=False
        )
        assert kernels.select_backend(torch.zeros(2, 2, device="cuda"), spec) == "triton"
    out = _run_script("bench_train_step.py", "--quick", "--device", "cuda", "--epoch")
    assert "CUDA (" in out and "one epoch" in out and "- epoch, bf16 autocast: released / ours = " in out
