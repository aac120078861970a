"""TernaryLeaky / BinaryLeaky as drop-in ``snn.Leaky``: snnTorch's own Leaky cases and tutorial loops.

The cases of snnTorch's ``tests/test_snntorch/test_leaky.py`` and ``tests/test_snntorch.py``
(commit 634fc22; the installed release is 1.0.0) are rewritten here, each run on
``snn.Leaky``, ``BinaryLeaky`` and ``TernaryLeaky`` with fresh neurons (snnTorch's share
module-scoped fixtures that the cases mutate). Tutorials 5, 6, 7, the regression tutorial and
``backprop.BPTT`` run a few iterations on the embedded 8x8 digits. Every difference that stays
by design is an explicit expectation marked "By design".
"""

import warnings

import pytest
import snntorch
import snntorch as snn
import torch
import torch._dynamo as dynamo
from snntorch import functional as SF
from snntorch import utils
from torch import nn

import tspike_lab as tl
from tspike_lab import data, functional
from tspike_lab.errors import ConfigError

NEURONS = [snn.Leaky, tl.BinaryLeaky, tl.TernaryLeaky]
OURS = [tl.BinaryLeaky, tl.TernaryLeaky]
NUM_STEPS = 5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batches of 64 x 64: one thread is several times faster, and steady on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """An empty ``SpikingNeuron.instances`` per test: snnTorch's helpers act on every neuron in it."""
    monkeypatch.setattr(snn.SpikingNeuron, "instances", [])


def run_steps(lif, x_seq, weights=None):
    """``(spk_seq, mem_seq, dL/dx_seq)`` of ``lif`` stepped over ``x_seq`` [T, ...] the snnTorch way."""
    x_seq = x_seq.clone().requires_grad_()
    mem = lif.init_leaky()
    spk_rec, mem_rec = [], []
    for x in x_seq:
        spk, mem = lif(x, mem)
        spk_rec.append(spk)
        mem_rec.append(mem)
    spk_seq, mem_seq = torch.stack(spk_rec), torch.stack(mem_rec)
    if weights is None:
        weights = torch.linspace(-1, 1, spk_seq.numel(), dtype=spk_seq.dtype).reshape(spk_seq.shape)
    ((spk_seq + 0.5 * mem_seq) * weights).sum().backward()
    return spk_seq.detach(), mem_seq.detach(), x_seq.grad


# --- snnTorch's own Leaky cases ------------------------------------------------------------


@pytest.mark.parametrize("cls", NEURONS)
def test_the_membrane_decays_by_beta_and_stays_silent_below_threshold(cls):
    # snnTorch test_leaky: inputs 0.25 then 0, beta 0.5 (below every class's default threshold).
    lif = cls(beta=0.5)
    input_ = torch.Tensor([0.25, 0]).unsqueeze(-1)
    mem = lif.init_leaky()
    mem_rec, spk_rec = [], []
    for i in range(2):
        spk, mem = lif(input_[i], mem)
        mem_rec.append(mem)
        spk_rec.append(spk)
    assert mem_rec[1] == mem_rec[0] * 0.5 + input_[1]
    assert spk_rec[0] == spk_rec[1] == 0


@pytest.mark.parametrize("cls", NEURONS)
def test_the_reset_mechanism_setter_updates_reset_mechanism_val(cls):
    # snnTorch test_leaky_reset, with each mechanism named (our default is "zero", theirs "subtract").
    lif1 = cls(beta=0.5, reset_mechanism="subtract")
    lif2 = cls(beta=0.5, reset_mechanism="zero")
    lif3 = cls(beta=0.5, reset_mechanism="none")
    assert (lif1.reset_mechanism_val, lif2.reset_mechanism_val, lif3.reset_mechanism_val) == (0, 1, 2)
    lif1.reset_mechanism = "zero"
    lif2.reset_mechanism = "none"
    lif3.reset_mechanism = "subtract"
    assert (lif1.reset_mechanism_val, lif2.reset_mechanism_val, lif3.reset_mechanism_val) == (1, 2, 0)
    assert (lif1.reset_mechanism, lif2.reset_mechanism, lif3.reset_mechanism) == ("zero", "none", "subtract")


@pytest.mark.parametrize("cls", NEURONS)
@pytest.mark.parametrize("reset_mechanism", ["subtract", "zero", "none"])
def test_init_hidden_returns_only_the_spike_and_keeps_the_membrane(cls, reset_mechanism):
    # snnTorch test_leaky_init_hidden, _reset_zero, _reset_none.
    lif = cls(beta=0.5, init_hidden=True, reset_mechanism=reset_mechanism)
    input_ = torch.Tensor([0.25, 0]).unsqueeze(-1)
    spk_rec = [lif(input_[i]) for i in range(2)]
    assert all(isinstance(spk, torch.Tensor) for spk in spk_rec)
    assert spk_rec[0] == spk_rec[1]
    assert lif.mem.item() == pytest.approx(0.125)


@pytest.mark.parametrize("cls", NEURONS)
def test_passing_mem_to_an_init_hidden_neuron_raises_type_error(cls):
    # snnTorch test_leaky_cases.
    lif = cls(beta=0.5, init_hidden=True)
    input_ = torch.Tensor([0.25, 0]).unsqueeze(-1)
    with pytest.raises(TypeError):
        lif(input_, input_)


@pytest.mark.parametrize("cls", NEURONS)
def test_learn_graded_spikes_factor_makes_the_amplitude_trainable(cls):
    # snnTorch test_leaky_hidden_learn_graded_instance.
    lif = cls(beta=0.5, init_hidden=True, learn_graded_spikes_factor=True)
    assert lif.graded_spikes_factor.requires_grad


@pytest.mark.parametrize("cls", NEURONS)
@pytest.mark.parametrize("surrogate_disable", [True, False])
def test_dynamo_traces_a_step_with_zero_graph_breaks(cls, surrogate_disable):
    # snnTorch test_leaky_compile_fullgraph (surrogate_disable=True), and with each default surrogate.
    lif = cls(beta=0.5, surrogate_disable=surrogate_disable)
    explanation = dynamo.explain(lif)(torch.Tensor([0.25]))
    assert explanation.graph_break_count == 0


@pytest.mark.parametrize("cls", NEURONS)
def test_every_neuron_joins_snntorchs_neuron_registry(cls):
    # snnTorch tests/test_snntorch.py test_instances.
    before = len(snn.SpikingNeuron.instances)
    lif = cls(beta=0.5)
    assert len(snn.SpikingNeuron.instances) == before + 1
    assert snn.SpikingNeuron.instances[-1] is lif


# --- what snnTorch's helpers need from a neuron ------------------------------------------------


@pytest.mark.parametrize("cls", NEURONS)
def test_snntorch_reset_hidden_and_detach_hidden_reach_the_neuron(cls):
    lif = cls(beta=0.5, init_hidden=True)
    lif(torch.ones(3, 4, requires_grad=True))
    assert lif.mem.grad_fn is not None
    snn.Leaky.detach_hidden()
    assert lif.mem.grad_fn is None and lif.mem.abs().sum() > 0
    snn.Leaky.reset_hidden()
    assert lif.mem.shape == (3, 4) and lif.mem.abs().sum() == 0


@pytest.mark.parametrize("cls", NEURONS)
def test_reset_mem_keeps_zeros_of_the_last_shape(cls):
    lif = cls(beta=0.5)
    lif(torch.ones(2, 3), lif.init_leaky())
    mem = lif.reset_mem()
    assert mem is lif.mem and mem.shape == (2, 3) and mem.abs().sum() == 0


@pytest.mark.parametrize("cls", NEURONS)
def test_snntorch_utils_reset_stops_state_leaking_between_evaluation_batches(cls):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(6, 8), cls(beta=0.5, init_hidden=True), nn.Linear(8, 3), cls(beta=0.5, init_hidden=True, output=True)
    ).eval()
    x = torch.randn(4, 6) * 3

    def forward_pass():
        utils.reset(net)
        return torch.stack([net(x)[0] for _ in range(NUM_STEPS)])

    with torch.no_grad():
        first, second = forward_pass(), forward_pass()
    assert first.abs().sum() > 0
    assert torch.equal(first, second)


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", NEURONS)
def test_reset_mechanism_none_integrates_without_reset(cls):
    # u_t = beta * u_{t-1} + x_t whatever fires (snnTorch's regression tutorial output layer).
    lif = cls(beta=0.5, threshold=0.5, reset_mechanism="none")
    x_seq = torch.tensor([[0.8], [-1.2], [0.4]], dtype=torch.float64)
    spk, mem, _ = run_steps(lif.double(), x_seq)
    torch.testing.assert_close(mem.flatten(), torch.tensor([0.8, -0.8, 0.0], dtype=torch.float64))
    assert spk[0].item() == 1 and spk[2].item() == 0
    # Only the ternary neuron fires on u = -0.8.
    assert spk[1].item() == (-1 if cls is tl.TernaryLeaky else 0)


@pytest.mark.parametrize(
    "how", ["setter", "snn.Leaky state_dict", "TernaryLeaky state_dict", "buffer assignment", "buffer changed in place"]
)
def test_the_update_follows_the_reset_mechanism_however_it_changes(how):
    # Built "zero", switched to "subtract" (beta 0.9, threshold 1, snn.Leaky's values). A -1 spike
    # then adds the threshold back; read by a stale "zero" update, (1 - b) = 2 doubled the membrane
    # every step and it fired -1 forever.
    lif = tl.TernaryLeaky(beta=0.9, threshold=1.0)
    if how == "setter":
        lif.reset_mechanism = "subtract"
    elif how == "snn.Leaky state_dict":
        lif.load_state_dict(snn.Leaky(beta=0.9).state_dict())
    elif how == "TernaryLeaky state_dict":
        lif.load_state_dict(tl.TernaryLeaky(beta=0.9, threshold=1.0, reset_mechanism="subtract").state_dict())
    elif how == "buffer assignment":
        lif.reset_mechanism_val = torch.tensor(0)
    else:
        lif.reset_mechanism_val.fill_(0)
    assert lif.reset_mechanism == "subtract"
    x_seq = torch.tensor([[-1.5]] + [[0.0]] * 7, dtype=torch.float64)
    spk, mem, _ = run_steps(lif.double(), x_seq)
    b_ref, mem_ref = functional.oracle_lif_seq(x_seq, beta=0.9, threshold=1.0, reset_mechanism="subtract")
    assert torch.equal(spk, b_ref) and spk.flatten().tolist() == [-1] + [0] * 7
    torch.testing.assert_close(mem, mem_ref)


@pytest.mark.parametrize("cls", OURS)
@pytest.mark.parametrize("learn", [False, True])
def test_state_dicts_load_from_snn_leaky_and_back(cls, learn):
    kw = dict(learn_beta=learn, learn_threshold=learn, learn_graded_spikes_factor=learn)
    leaky = snn.Leaky(beta=0.75, threshold=1.5, reset_mechanism="zero", graded_spikes_factor=2.0, **kw)
    ours = cls(**kw)
    ours.load_state_dict(leaky.state_dict())
    state = {name: value.item() for name, value in ours.state_dict().items()}
    assert state == {"beta": 0.75, "threshold": 1.5, "graded_spikes_factor": 2.0, "reset_mechanism_val": 1}
    ours.reset_mechanism = "none"
    leaky.load_state_dict(ours.state_dict())
    assert leaky.reset_mechanism_val == 2


def test_by_design_snn_leaky_keeps_the_update_it_was_built_with_after_the_setter():
    # By design: snn.Leaky picks its charge equation once, at construction, so after
    # reset_mechanism = "none" it still subtracts; ours reads reset_mechanism_val every step.
    x_seq = torch.tensor([[1.5], [0.0]])
    leaky, ours = snn.Leaky(beta=0.5), tl.BinaryLeaky(beta=0.5, threshold=1.0, reset_mechanism="subtract")
    for lif in (leaky, ours):
        lif.reset_mechanism = "none"
    _, mem_leaky, _ = run_steps(leaky, x_seq)
    _, mem_ours, _ = run_steps(ours, x_seq)
    assert mem_leaky.flatten().tolist() == [1.5, 0.75 - 1.0]
    assert mem_ours.flatten().tolist() == [1.5, 0.75]


@pytest.mark.parametrize("reset_mechanism", ["subtract", "zero", "none"])
@pytest.mark.parametrize("reset_delay", [True, False])
@pytest.mark.parametrize("inhibition", [False, True])
@pytest.mark.filterwarnings("ignore:Inhibition is an unstable feature")
def test_binary_leaky_with_snntorch_settings_and_detach_reset_is_snn_leaky(reset_mechanism, reset_delay, inhibition):
    # Spikes, membranes and the gradients of input, beta and threshold, bit for bit.
    torch.manual_seed(3)
    x_seq = torch.randn(8, 4, 6, dtype=torch.float64) * 1.5
    kw = dict(
        beta=0.8,
        threshold=1.0,
        reset_mechanism=reset_mechanism,
        reset_delay=reset_delay,
        inhibition=inhibition,
        learn_beta=True,
        learn_threshold=True,
    )
    leaky = snn.Leaky(**kw).double()
    ours = tl.BinaryLeaky(spike_grad=snntorch.surrogate.atan(), detach_reset=True, **kw).double()
    spk_l, mem_l, dx_l = run_steps(leaky, x_seq)
    spk_o, mem_o, dx_o = run_steps(ours, x_seq)
    assert spk_l.abs().sum() > 0
    assert torch.equal(spk_o, spk_l) and torch.equal(mem_o, mem_l)
    torch.testing.assert_close(dx_o, dx_l, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.beta.grad, leaky.beta.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.threshold.grad, leaky.threshold.grad, rtol=1e-12, atol=1e-12)


def test_by_design_binary_leaky_differentiates_through_the_reset_unless_detach_reset():
    # By design: the paper's neuron (our default, detach_reset=False) lets the gradient through
    # the reset signal; snn.Leaky always detaches it. Same spikes, other gradients.
    torch.manual_seed(3)
    x_seq = torch.randn(8, 4, 6, dtype=torch.float64) * 1.5
    leaky = snn.Leaky(beta=0.8).double()
    ours = tl.BinaryLeaky(
        beta=0.8, threshold=1.0, spike_grad=snntorch.surrogate.atan(), reset_mechanism="subtract"
    ).double()
    spk_l, mem_l, dx_l = run_steps(leaky, x_seq)
    spk_o, mem_o, dx_o = run_steps(ours, x_seq)
    assert torch.equal(spk_o, spk_l) and torch.equal(mem_o, mem_l)
    assert not torch.allclose(dx_o, dx_l)


def test_by_design_our_surrogates_fire_at_the_threshold_snntorch_callables_above_it():
    # By design: the paper fires where u >= threshold; snnTorch's surrogates fire where u > threshold.
    x = torch.tensor([1.0])
    assert snn.Leaky(beta=0.5)(x, None)[0].item() == 0
    assert tl.BinaryLeaky(beta=0.5, threshold=1.0)(x, None)[0].item() == 1
    assert tl.BinaryLeaky(beta=0.5, threshold=1.0, spike_grad=snntorch.surrogate.atan())(x, None)[0].item() == 0


def test_by_design_the_defaults_are_the_papers():
    # By design: the paper's released code, not snnTorch's defaults (beta required, threshold 1.0,
    # "subtract", atan, reset detached).
    for cls in OURS:
        lif = cls()
        assert (float(lif.beta), float(lif.threshold), lif.reset_mechanism) == (0.25, 0.5, "zero")
        assert isinstance(lif.spike_grad, tl.surrogate.STE) and lif.detach_reset is False
    leaky = snn.Leaky(beta=0.25)
    assert (float(leaky.threshold), leaky.reset_mechanism) == (1.0, "subtract")


@pytest.mark.parametrize("cls", OURS)
@pytest.mark.parametrize("reset_mechanism", ["subtract", "zero"])
def test_reset_delay_false_resets_within_the_step_and_returns_the_reset_membrane(cls, reset_mechanism):
    # beta 0.25, th 0.5. u1 = 0.6 fires +1: zero -> 0, subtract -> 0.1. Then u2 = 0.25 u1 - 0.3,
    # u3 = 0.25 u2 - 0.5 (ternary fires -1: zero -> 0, subtract -> u3 + 0.5).
    x_seq = torch.tensor([[0.6], [-0.3], [-0.5]], dtype=torch.float64)
    lif = cls(reset_delay=False, reset_mechanism=reset_mechanism).double()
    spk, mem, _ = run_steps(lif, x_seq)
    u1 = 0.0 if reset_mechanism == "zero" else 0.1
    u2 = 0.25 * u1 - 0.3
    u3 = 0.25 * u2 - 0.5
    if cls is tl.TernaryLeaky:
        u3 = 0.0 if reset_mechanism == "zero" else u3 + 0.5
    torch.testing.assert_close(mem.flatten(), torch.tensor([u1, u2, u3], dtype=torch.float64))
    assert spk.flatten().tolist() == ([1, 0, -1] if cls is tl.TernaryLeaky else [1, 0, 0])


@pytest.mark.parametrize("cls", NEURONS)
@pytest.mark.filterwarnings("ignore:Inhibition is an unstable feature")
def test_inhibition_lets_only_the_strongest_neuron_of_each_sample_fire(cls):
    lif = cls(beta=0.5, threshold=0.5, inhibition=True)
    spk, _ = lif(torch.tensor([[0.6, -0.9, 0.7], [0.8, 0.1, -0.2]]), None)
    if cls is tl.TernaryLeaky:
        # Ours: the largest |u| - threshold wins, with its sign.
        assert spk.tolist() == [[0, -1, 0], [1, 0, 0]]
    else:
        assert spk.tolist() == [[0, 0, 1], [1, 0, 0]]


@pytest.mark.filterwarnings("ignore:Inhibition is an unstable feature")
def test_by_design_inhibited_spikes_carry_the_amplitude():
    # By design: our spikes are a * b with inhibition too; snn.Leaky's fire_inhibition drops a.
    x = torch.tensor([[0.6, 1.9]])
    leaky = snn.Leaky(beta=0.5, inhibition=True, graded_spikes_factor=2.0)
    ours = tl.BinaryLeaky(beta=0.5, threshold=1.0, inhibition=True, graded_spikes_factor=2.0)
    assert leaky(x, None)[0].tolist() == [[0, 1]]
    assert ours(x, None)[0].tolist() == [[0, 2]]


@pytest.mark.parametrize("cls", OURS)
@pytest.mark.parametrize("how", ["learn_threshold=True", "nn.Parameter by hand"])
def test_a_learned_threshold_gets_the_gradient_autograd_gives_an_snntorch_surrogate(cls, how):
    # Our atan is snnTorch's atan; autograd through snnTorch's f(u - th) is the reference
    # (to float32 precision: snnTorch's surrogates return float32 spikes for float64 input).
    torch.manual_seed(4)
    x_seq = torch.randn(6, 3, 5, dtype=torch.float64)
    neurons = []
    for spike_grad in (tl.surrogate.atan(), snntorch.surrogate.atan()):
        if how == "learn_threshold=True":
            lif = cls(spike_grad=spike_grad, learn_threshold=True, reset_mechanism="subtract")
        else:
            lif = cls(spike_grad=spike_grad, reset_mechanism="subtract")
            lif.threshold = nn.Parameter(torch.tensor(0.5))
        neurons.append(lif.double())
        run_steps(lif, x_seq)
    ours, reference = neurons
    assert ours.threshold.grad is not None and ours.threshold.grad.abs() > 0.1
    torch.testing.assert_close(ours.threshold.grad, reference.threshold.grad, rtol=1e-6, atol=0)


@pytest.mark.parametrize("cls, expected", [(tl.TernaryLeaky, -1.0), (tl.BinaryLeaky, -2.0)])
def test_a_learned_threshold_under_the_papers_ste_gets_minus_one_per_positive_spike(cls, expected):
    # STE window |u| <= 2 th = 1: d b / d th = -1 where 0 <= u <= 1, +1 where -1 <= u < 0 (ternary only).
    lif = cls(learn_threshold=True)
    spk, _ = lif(torch.tensor([0.6, 0.7, -0.6]), None)
    spk.sum().backward()
    assert lif.threshold.grad.item() == expected


@pytest.mark.parametrize("cls", OURS)
def test_torch_compile_fullgraph_steps_as_eager_forward_and_backward(cls):
    torch.manual_seed(5)
    x_seq = torch.randn(4, 3, 5)
    eager = cls(learn_threshold=True, learn_graded_spikes_factor=True)
    compiled = cls(learn_threshold=True, learn_graded_spikes_factor=True)
    spk_e, mem_e, dx_e = run_steps(eager, x_seq)
    spk_c, mem_c, dx_c = run_steps(torch.compile(compiled, fullgraph=True, backend="aot_eager"), x_seq)
    assert torch.equal(spk_c, spk_e) and torch.equal(mem_c, mem_e)
    torch.testing.assert_close(dx_c, dx_e)
    torch.testing.assert_close(compiled.threshold.grad, eager.threshold.grad)
    torch.testing.assert_close(compiled.graded_spikes_factor.grad, eager.graded_spikes_factor.grad)


def test_by_design_a_ternary_threshold_must_be_positive():
    # By design: +1 at u >= th and -1 at u <= -th overlap for th <= 0; snn.Leaky takes any threshold.
    with pytest.raises(ConfigError, match="threshold must be > 0.*got 0.0"):
        tl.TernaryLeaky(threshold=0.0)
    tl.BinaryLeaky(threshold=0.0)


# --- NIR ----------------------------------------------------------------------------------------


def _nir_net(cls, **kw):
    # snnTorch's test_nir fixture, smaller: NIR needs beta and threshold per neuron.
    return nn.Sequential(
        nn.Linear(6, 5),
        cls(beta=0.5 * torch.ones(5), threshold=0.5 * torch.ones(5), init_hidden=True, **kw),
        nn.Linear(5, 3),
        cls(beta=0.5 * torch.ones(3), threshold=0.5 * torch.ones(3), init_hidden=True, output=True),
    )


@pytest.mark.parametrize(
    "kw, match", [({}, "losing every -1 spike"), ({"graded_spikes_factor": 2.0}, "losing the amplitude a")]
)
def test_snntorch_export_to_nir_refuses_what_nir_lif_cannot_hold(kw, match):
    pytest.importorskip("nirtorch")
    from snntorch.export_nir import export_to_nir

    cls = tl.BinaryLeaky if kw else tl.TernaryLeaky
    call = nn.Module.__call__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ConfigError, match=match):
            export_to_nir(_nir_net(cls, **kw), torch.randn(4, 6), ignore_dims=[0])
    assert nn.Module.__call__ is call


def test_a_binary_leaky_network_round_trips_through_nir_spike_for_spike():
    pytest.importorskip("nirtorch")
    from snntorch.export_nir import export_to_nir
    from snntorch.import_nir import import_from_nir

    torch.manual_seed(6)
    net = _nir_net(tl.BinaryLeaky)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        graph = export_to_nir(net, torch.randn(4, 6), ignore_dims=[0])
        imported = import_from_nir(graph)
    x_seq = torch.randn(8, 4, 6) * 2
    tl.reset(net)
    spk_ours = torch.stack([net(x)[0] for x in x_seq])
    state, spk_nir = None, []
    for x in x_seq:
        spk, state = imported(x, state)
        spk_nir.append(spk)
    assert spk_ours.abs().sum() > 0
    assert torch.equal(spk_ours, torch.stack(spk_nir))


# --- tutorials on the embedded digits -------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    """Digits as the tutorials feed MNIST: flat pixels in [0, 1], batches of 64, a fixed order."""
    src = data.load("digits")
    x = src.train_x.flatten(1).float() / 255
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return [(x[i], src.train_y[i]) for i in order[: 64 * 20].split(64)]


def make(cls, **kw):
    """A neuron the way a user swaps the class name: beta given, every other default the class's own."""
    return cls(beta=0.5, **kw)


def sequential(cls):
    """Tutorials 6 and 7: ``nn.Sequential`` of ``init_hidden`` neurons, the last with ``output=True``."""
    return nn.Sequential(
        nn.Linear(64, 32), make(cls, init_hidden=True), nn.Linear(32, 10), make(cls, init_hidden=True, output=True)
    )


def assert_loss_went_down(losses, factor):
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < factor * first, f"loss {first:.3f} -> {last:.3f}: {[round(v, 3) for v in losses]}"


class Tutorial5Net(nn.Module):
    """Tutorial 5: two layers, the membranes made by ``init_leaky()`` at every forward."""

    def __init__(self, cls):
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(64, 32), make(cls)
        self.fc2, self.lif2 = nn.Linear(32, 10), make(cls)

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        mem2_rec = []
        for _ in range(NUM_STEPS):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            mem2_rec.append(mem2)
        return torch.stack(mem2_rec)


@pytest.mark.parametrize("cls", NEURONS)
def test_tutorial_5_class_based_network_with_init_leaky_trains(cls, digits):
    torch.manual_seed(0)
    net = Tutorial5Net(cls)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for x, y in digits:
        mem_rec = net(x)
        loss = sum(nn.functional.cross_entropy(mem, y) for mem in mem_rec)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert_loss_went_down(losses, 0.7)


@pytest.mark.parametrize("cls", NEURONS)
@pytest.mark.parametrize(
    "loss_fn",
    [SF.ce_rate_loss(), SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)],
    ids=["tutorial_6_ce_rate_loss", "tutorial_7_mse_count_loss"],
)
def test_sequential_network_reset_by_snntorch_utils_trains_over_batches(cls, loss_fn, digits):
    torch.manual_seed(0)
    net = sequential(cls)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for x, y in digits * 2:
        utils.reset(net)
        spk_rec = torch.stack([net(x)[0] for _ in range(NUM_STEPS)])
        loss = loss_fn(spk_rec, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert_loss_went_down(losses, 0.9)


@pytest.mark.parametrize("cls", NEURONS)
def test_backprop_bptt_trains_a_sequential_network(cls, digits):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from snntorch import backprop
    torch.manual_seed(0)
    net = sequential(cls)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)
    losses = [
        backprop.BPTT(
            net,
            digits[5 * epoch : 5 * epoch + 5],
            optimizer=optimizer,
            criterion=loss_fn,
            num_steps=NUM_STEPS,
            time_var=False,
        ).item()
        for epoch in range(4)
    ]
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("cls", NEURONS)
def test_regression_tutorial_output_with_reset_none_and_learned_beta_trains(cls, digits):
    # Regression tutorial: a non-resetting output neuron (learn_beta) whose membrane is regressed,
    # here onto the digit's label / 9.
    torch.manual_seed(0)
    fc1, lif1 = nn.Linear(64, 32), make(cls, learn_beta=True)
    fc2, li_out = nn.Linear(32, 1), make(cls, learn_beta=True, reset_mechanism="none")
    params = [*fc1.parameters(), *lif1.parameters(), *fc2.parameters(), *li_out.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for x, y in digits:
        mem1, mem2 = lif1.init_leaky(), li_out.init_leaky()
        for _ in range(NUM_STEPS):
            spk1, mem1 = lif1(fc1(x), mem1)
            _, mem2 = li_out(fc2(spk1), mem2)
        loss = nn.functional.mse_loss(mem2.squeeze(1), y.float() / 9)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert_loss_went_down(losses, 0.5)
    assert li_out.beta.grad is not None
