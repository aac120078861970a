"""Spiking neuron modules: snnTorch-compatible single-step, and multi-step ``[T, B, ...]``.

Paper symbols -> code names: tau <-> ``beta`` (0.25), V_th <-> ``threshold`` (0.5, the
released code's effective threshold), a <-> ``graded_spikes_factor`` (Eq. 13-14),
trainable a <-> ``learn_graded_spikes_factor=True``.
"""

from __future__ import annotations

import snntorch
import torch
from snntorch._neurons.neurons import SpikingNeuron
from torch import nn

from . import kernels, surrogate
from .errors import ConfigError
from .kernels import step as fused_step

__all__ = ["TernaryLeaky", "BinaryLeaky", "MultiStepLIF", "SpikingLayer", "reset"]


class _PaperLeaky(snntorch.Leaky):
    """``snntorch.Leaky`` with the paper's neuron: a spike of either sign resets, output ``a * b``.

    One step (charge, fire, reset; the reset of step t-1 is applied while charging step t, so
    the returned membrane is the one the spike was fired on, as in ``snn.Leaky``):

        r_t = b(u_{t-1})                                   reset signal (detached if detach_reset)
        u_t = beta * u_{t-1} * (1 - |r_t|) + x_t           reset_mechanism="zero"
        u_t = beta * u_{t-1} + x_t - r_t * threshold       "subtract"
        u_t = beta * u_{t-1} + x_t                         "none"
        spk_t = a * b(u_t)

    Where it can (:mod:`tspike_lab.kernels.step` lists the cases: CPU float32/64, scalar fixed beta
    and threshold, our surrogates, no inhibition / state_quant / reset_delay=False, not under
    torch.compile; not in a subclass that overrides the spike function's methods) a step is one
    fused C call forward and one backward, with the general path's results; elsewhere it runs
    the general path below, op by op. The fused step's backward is not itself differentiable: for
    second-order gradients (``create_graph=True``, e.g. a gradient penalty) set ``fused_step = False``
    on the neuron; a fused step asked for them raises and says so.

    ``reset_delay=False`` is snnTorch's: the spike also resets ``u_t`` within step t and the
    membrane returned is the reset one, ``u_t * (1 - |b_t| + |r_t|)`` ("zero") or
    ``u_t - (b_t - r_t) * threshold`` ("subtract"); ``r_t`` keeps a reset from being applied twice.

    The reset mechanism is one piece of state, the buffer ``reset_mechanism_val`` (0 subtract,
    1 zero, 2 none): the property, the setter, ``load_state_dict`` and the update all read it.

    A subclass is one spike function ``b``: it defines :meth:`_fire_unscaled` (``b(u)`` with the
    surrogate backward), :meth:`_threshold_grad` (``db/dth``), :meth:`_fired` (what the spike of
    this step adds to the reset), :meth:`_drive` (how far beyond threshold, for inhibition) and
    may tighten :meth:`_check_threshold` and :meth:`_check_nir_export`; ``kind`` names it.

    Args: those of ``snn.Leaky`` (every one is supported), with the paper's defaults, and
        detach_reset: detach ``r_t`` as ``snn.Leaky`` always does (the paper's neuron does not);
            with ``reset_delay=False`` the reset by ``b_t`` keeps its gradient, as in ``snn.Leaky``.
    """

    kind: str  # "binary" or "ternary", for readers (probes, reports); nothing branches on it
    _ternary: bool  # the spike function, told to the fused step's kernel
    # What the fused step computes in place of the general path: a subclass (a user's) that
    # overrides one of these keeps its general path, where its override runs.
    _FUSED_REPLACES = ("_fire_unscaled", "_threshold_grad", "_spike", "_charge", "_reset_masks", "mem_reset", "fire")
    _fusable = False
    fused_step = True  # False: always the general path (differentiable twice, slower)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        ours = next(c for c in cls.__mro__ if c.__module__ == __name__)  # TernaryLeaky, BinaryLeaky
        cls._fusable = ours is cls or all(getattr(cls, m) is getattr(ours, m) for m in cls._FUSED_REPLACES)

    _RESETS = tuple(SpikingNeuron.reset_dict)  # index = reset_mechanism_val

    def __init__(
        self,
        beta=0.25,
        threshold=0.5,
        spike_grad=None,
        surrogate_disable=False,
        init_hidden=False,
        inhibition=False,
        learn_beta=False,
        learn_threshold=False,
        reset_mechanism="zero",
        state_quant=False,
        output=False,
        graded_spikes_factor=1.0,
        learn_graded_spikes_factor=False,
        reset_delay=True,
        detach_reset=False,
    ):
        self._reset_index(reset_mechanism)
        self._check_threshold(threshold)
        super().__init__(
            beta,
            threshold=threshold,
            spike_grad=surrogate.get(spike_grad),
            surrogate_disable=surrogate_disable,
            init_hidden=init_hidden,
            inhibition=inhibition,
            learn_beta=learn_beta,
            learn_threshold=learn_threshold,
            reset_mechanism=reset_mechanism,
            state_quant=state_quant,
            output=output,
            graded_spikes_factor=graded_spikes_factor,
            learn_graded_spikes_factor=learn_graded_spikes_factor,
            reset_delay=reset_delay,
        )
        self.detach_reset = bool(detach_reset)
        # snn.Leaky picks its update once, here; ours reads reset_mechanism_val at every step.
        del self._reset_mechanism
        self.state_function = self._charge
        # Like snn.Leaky, the neuron stays in SpikingNeuron.instances, so snntorch.utils.reset,
        # reset_hidden, detach_hidden and backprop.BPTT reach it; tspike_lab.reset(net) is scoped.

    # -- what a spike function defines ----------------------------------------------------------

    @classmethod
    def _check_threshold(cls, threshold) -> None:
        """Refuse a threshold this spike function cannot fire with (any is fine by default)."""

    def _fire_unscaled(self, mem: torch.Tensor) -> torch.Tensor:
        """``b(u)`` with the surrogate backward (``self.spike_grad``)."""
        raise NotImplementedError

    def _threshold_grad(self, u: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
        """``db/dth`` at ``u`` from one of our surrogates (their backward gives ``db/du`` only)."""
        raise NotImplementedError

    def _fired(self, b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """reset_delay=False, "zero": the fraction of ``u_t`` this step's spike ``b_t`` removes, net of ``r_t``."""
        raise NotImplementedError

    def _drive(self, mem: torch.Tensor) -> torch.Tensor:
        """How far each neuron is beyond firing (inhibition keeps the largest of each row)."""
        raise NotImplementedError

    # -- the step ---------------------------------------------------------------------------------

    @property
    def reset_mechanism(self) -> str:
        """ "subtract", "zero" or "none", read from the buffer ``reset_mechanism_val``."""
        return self._RESETS[int(self.reset_mechanism_val)]

    @reset_mechanism.setter
    def reset_mechanism(self, value):
        self.reset_mechanism_val.fill_(self._reset_index(value))

    @classmethod
    def _reset_index(cls, reset_mechanism) -> int:
        if reset_mechanism not in cls._RESETS:
            raise ConfigError(f"reset_mechanism must be one of {cls._RESETS}, got {reset_mechanism!r}")
        return cls._RESETS.index(reset_mechanism)

    def _reset_masks(self, like: torch.Tensor):
        """``(subtract, zero)`` as 0/1 tensors from the buffer: no branch, so no graph break."""
        val = self.reset_mechanism_val
        return (val == 0).to(like.dtype), (val == 1).to(like.dtype)

    def forward(self, input_, mem=None):
        if mem is not None:
            if self.init_hidden:
                raise TypeError("`mem` should not be passed as an argument while `init_hidden=True`")
            self.mem = mem
        if self.mem.shape != input_.shape:
            self.mem = torch.zeros_like(input_)
        if self._exporting_to_nir():
            self._check_nir_export()

        fused = self._fused_step(input_)
        if fused is not None:
            b, self.mem = fused
            a = self.graded_spikes_factor
            # a = 1 (fixed, one value) would multiply every spike by 1: the same bits, one pass less
            spk = b if (a.dim() == 0 and not a.requires_grad and float(a) == 1.0) else b * a
        else:
            self.reset = self.mem_reset(self.mem)  # r_t = b(u_{t-1})
            self.mem = self._charge(input_)  # u_t
            if self.state_quant:
                self.mem = self.state_quant(self.mem)
            b = self._spike(self.mem)
            if self.inhibition:
                b = self._inhibit(b, self.mem)
            if not self.reset_delay:
                self.mem = self._reset_now(b)
            spk = b * self.graded_spikes_factor

        if self.output:
            return spk, self.mem
        if self.init_hidden:
            return spk
        return spk, self.mem

    def _fused_step(self, input_):
        """``(b_t, u_t)`` by :func:`tspike_lab.kernels.step.lif_step`, or None where the general path runs."""
        if not (self._fusable and self.fused_step) or self.inhibition or self.state_quant or not self.reset_delay:
            return None
        beta, th, mem = self.beta, self.threshold, self.mem
        if fused_step.step_reason(input_, mem, beta, th, self.spike_grad) is not None:
            return None
        args = fused_step.step_args(
            input_.numel(),
            beta=min(max(float(beta), 0.0), 1.0),
            threshold=float(th),
            reset=int(self.reset_mechanism_val),
            ternary=self._ternary,
            detach=self.detach_reset,
            spike_grad=self.spike_grad,
        )
        return fused_step.lif_step(input_, mem, args)

    def _charge(self, input_):
        """``u_t`` from ``self.mem`` (u_{t-1}) and ``self.reset`` (r_t), per the buffer's mechanism."""
        subtract, zero = self._reset_masks(self.mem)
        r = self.reset
        # The order of snn.Leaky's _base_zero / _base_sub, so BinaryLeaky matches it bit for bit.
        u = self.beta.clamp(0, 1) * self.mem * (1 - zero * r.abs()) + input_
        return u - subtract * r * self.threshold

    def _reset_now(self, b):
        """reset_delay=False: ``u_t`` reset by this step's spike ``b_t`` (kept attached, as snn.Leaky)."""
        subtract, zero = self._reset_masks(self.mem)
        r = self.reset
        return self.mem - zero * self._fired(b, r) * self.mem - subtract * (b - r) * self.threshold

    def _spike(self, mem):
        """Unscaled spike ``b(u)`` with the surrogate backward, and ``db/dthreshold`` if it is learned."""
        if self.state_quant:
            mem = self.state_quant(mem)
        b = self._fire_unscaled(mem)
        if self.threshold.requires_grad and isinstance(self.spike_grad, surrogate.Surrogate):
            g = self._threshold_grad(mem.detach(), self.threshold.detach())
            b = b + (self.threshold * g - (self.threshold * g).detach())  # + 0, gradient g
        return b

    def _inhibit(self, b, mem):
        """Keep the spike of the neuron of largest :meth:`_drive` in each row.

        As in ``snn.Leaky``: the dense layer ``[B, N]`` only, and the reset reads the
        uninhibited ``b(u_{t-1})``, so a suppressed neuron above threshold still resets.
        """
        mask = torch.zeros_like(b)
        mask[torch.arange(mem.size(0)), torch.argmax(self._drive(mem), dim=1)] = 1
        return b * mask

    def fire(self, mem):
        """``o_t = a * b_t``."""
        return self._spike(mem) * self.graded_spikes_factor

    def fire_inhibition(self, batch_size, mem):
        """``a * b_t`` of the winning neuron of each row only (see ``_inhibit``)."""
        return self._inhibit(self._spike(mem), mem) * self.graded_spikes_factor

    def mem_reset(self, mem):
        """Reset signal ``r = b(u)`` of the previous membrane, signed (the update takes |r| for "zero")."""
        r = self._spike(mem)
        return r.detach() if self.detach_reset else r

    def reset_mem(self):
        """Zeros of the last membrane's shape, as ``snn.Leaky``."""
        self.mem = torch.zeros_like(self.mem)
        return self.mem

    @staticmethod
    def _exporting_to_nir() -> bool:
        # snntorch.export_to_nir traces through nirtorch, which swaps nn.Module.__call__ for its recorder.
        return getattr(nn.Module.__call__, "__module__", "").startswith("nirtorch")

    def _check_nir_export(self):
        """Refuse what ``nir.LIF`` (spikes in {0, 1}) cannot hold, rather than export it wrong."""
        if not bool((self.graded_spikes_factor == 1).all()):
            raise ConfigError(
                f"{type(self).__name__} with graded_spikes_factor != 1 cannot be exported to NIR: nir.LIF "
                f"emits spikes of 1, losing the amplitude a; fold a into the next layer's weights first"
            )


class TernaryLeaky(_PaperLeaky):
    """Ternary LIF, a drop-in ``snntorch.Leaky`` (paper Eq. 7-8, 13-14).

        u_t = beta * u_{t-1} * (1 - |b_{t-1}|) + x_t,   b_t in {-1, 0, 1},   o_t = a * b_t

    Use it like ``snn.Leaky``: ``spk, mem = lif(x, mem)``; ``init_hidden=True`` inside
    ``nn.Sequential``; ``output=True``; every ``snn.Leaky`` option, and it is reset by
    ``snntorch.utils.reset`` and ``backprop.BPTT`` as ``snn.Leaky`` is. Defaults follow the
    paper's released code (beta 0.25, threshold 0.5, reset "zero", clipped STE, reset not
    detached); ``spike_grad`` takes our surrogates or any snnTorch one (then
    ``b = f(u - th) - f(-u - th)``). Per-channel amplitude: pass ``graded_spikes_factor`` shaped
    to broadcast, e.g. ``torch.ones(C, 1, 1)``. The update equations: :class:`_PaperLeaky`.

    Spikes can be -a: snnTorch helpers that look for a first spike or count spikes as a cost
    (``accuracy_temporal``, the temporal losses, ``l1_rate_sparsity``) misread them; use
    :mod:`tspike_lab.snn_functional`. ``snntorch.export_to_nir`` raises (NIR has no ternary neuron).
    ``inhibition=True`` keeps the neuron of largest ``|u| - threshold``.

    Shape: input ``[B, ...]`` -> spk, mem ``[B, ...]``.
    """

    kind = "ternary"
    _ternary = True

    @classmethod
    def _check_threshold(cls, threshold) -> None:
        if not bool((torch.as_tensor(threshold) > 0).all()):
            raise ConfigError(
                f"threshold must be > 0 for {cls.__name__} (it fires +1 where u >= threshold "
                f"and -1 where u <= -threshold), got {threshold!r}"
            )

    def _fire_unscaled(self, mem):
        """``b = 1[u >= th] - 1[u <= -th]`` (Eq. 8)."""
        return surrogate.ternary(mem, self.threshold, self.spike_grad)

    def _threshold_grad(self, u, th):
        # b = H(u - th) - H(-u - th): db/dth = -g(u - th) + g(-u - th), snnTorch's convention.
        return -self.spike_grad.binary_grad(u, th) + self.spike_grad.binary_grad(-u, th)

    def _fired(self, b, r):
        return b.abs() - r.abs()  # a spike of either sign resets

    def _drive(self, mem):
        return mem.abs() - self.threshold

    def _check_nir_export(self):
        raise ConfigError(
            f"{type(self).__name__} cannot be exported to NIR: NIR has no ternary neuron and "
            f"snntorch.export_to_nir would write it as nir.LIF, which fires only 0 or 1, losing every "
            f"-1 spike. Export networks of BinaryLeaky or snn.Leaky only."
        )


class BinaryLeaky(_PaperLeaky):
    """Binary LIF with the paper's defaults (the baseline): ``b_t = 1[u_t >= threshold]``.

    With snnTorch's settings (``threshold=1.0``, ``reset_mechanism="subtract"``,
    ``spike_grad=snntorch.surrogate.atan()``) it fires exactly as ``snn.Leaky``, but its
    gradients match only with ``detach_reset=True``: ``snn.Leaky`` always detaches the reset
    signal, the paper's neuron (our default) lets the gradient through it.
    """

    kind = "binary"
    _ternary = False

    def _fire_unscaled(self, mem):
        """``b = 1[u >= th]``."""
        return surrogate.heaviside(mem, self.threshold, self.spike_grad)

    def _threshold_grad(self, u, th):
        return -self.spike_grad.binary_grad(u, th)  # b = H(u - th)

    def _fired(self, b, r):
        # b - r as snn.Leaky, whose gradient reaches b_t where it is 0 (|b| would stop it)
        return b - r

    def _drive(self, mem):
        return mem - self.threshold


class SpikingLayer(nn.Module):
    """Base of the multi-step spiking layers; ``spiking_layers(model)`` finds these."""


class MultiStepLIF(SpikingLayer):
    """Multi-step LIF over ``[T, B, C, ...]``, binary or ternary, with amplitude ``a``.

        u_t = beta * u_{t-1} * (1 - |b_{t-1}|) + x_t;   out_t = a * b_t

    Numerically the loop of :class:`TernaryLeaky` / :func:`functional.lif_step` over t,
    in forward and in gradients. State starts at zero on every call (one sample = one
    sequence), so there is nothing to reset between batches.

    The options are checked and resolved into a :class:`~tspike_lab.kernels.LIFSpec` here, at
    construction, and again whenever one of them is set (``lif.beta = 0.3``): a bad value fails
    there, and a forward only runs the kernels.

    Args:
        kind: "binary" or "ternary".
        graded_spikes_factor: a, initial value (1.0, the released code's init).
        learn_graded_spikes_factor: train a (Eq. 13-14).
        num_channels: if given, one a per channel (dim 2 of the input) instead of one per layer.
        detach_reset: cut the gradient through the reset path (the paper's code does not).
        backend: one of :data:`tspike_lab.kernels.BACKENDS` ("auto" picks per input).
    Attributes:
        record: keep the last ``mem_seq`` and ``b_seq`` (detached) for probes.
    Shape: ``[T, B, ...]`` -> ``[T, B, ...]``.
    """

    def _option(name: str, doc: str):  # noqa: N805 - runs in the class body: one property per option
        return property(
            lambda self: self._backend if name == "backend" else getattr(self._spec, name),
            lambda self, value: self._configure(**{name: value}),
            doc=doc,
        )

    kind = _option("kind", '"binary" or "ternary".')
    beta = _option("beta", "Membrane decay in [0, 1] (a float).")
    threshold = _option("threshold", "Firing threshold > 0 (a float).")
    spike_grad = _option("spike_grad", "The surrogate (a tspike_lab.surrogate object, or an snnTorch callable).")
    reset_mechanism = _option("reset_mechanism", '"zero" or "subtract".')
    detach_reset = _option("detach_reset", "Cut the gradient through the reset path.")
    backend = _option("backend", "Which kernels run the layer (tspike_lab.kernels.BACKENDS).")
    del _option
    _OPTIONS = ("kind", "beta", "threshold", "spike_grad", "reset_mechanism", "detach_reset", "backend")

    def __init__(
        self,
        kind: str = "ternary",
        *,
        beta: float = 0.25,
        threshold: float = 0.5,
        spike_grad=None,
        reset_mechanism: str = "zero",
        graded_spikes_factor: float = 1.0,
        learn_graded_spikes_factor: bool = False,
        num_channels: int | None = None,
        detach_reset: bool = False,
        backend: str = "auto",
    ):
        super().__init__()
        self._configure(
            kind=kind,
            reset_mechanism=reset_mechanism,
            beta=beta,
            threshold=threshold,
            spike_grad=spike_grad,
            detach_reset=detach_reset,
            backend=backend,
        )
        if num_channels is not None and (not isinstance(num_channels, int) or num_channels < 1):
            raise ConfigError(f"num_channels must be None or a positive int, got {num_channels!r}")
        self.num_channels = num_channels
        a = torch.full((num_channels,) if num_channels else (), float(graded_spikes_factor))
        if learn_graded_spikes_factor:
            self.graded_spikes_factor = nn.Parameter(a)
        else:
            self.register_buffer("graded_spikes_factor", a)
        self.record = False
        self.mem_seq: torch.Tensor | None = None
        self.b_seq: torch.Tensor | None = None

    def _configure(self, **changes) -> None:
        """Check the options with ``changes`` applied and rebuild the spec; a bad value raises and
        leaves the layer as it was."""
        current = {name: getattr(self, name) for name in self._OPTIONS} if "_spec" in self.__dict__ else {}
        opts = {**current, **changes}
        beta, threshold = opts["beta"], opts["threshold"]
        spec = kernels.make_spec(
            beta=float(beta),
            threshold=float(threshold),
            kind=opts["kind"],
            reset_mechanism=opts["reset_mechanism"],
            spike_grad=opts["spike_grad"],
            detach_reset=opts["detach_reset"],
        )  # checks kind, reset, spike_grad
        if not 0.0 <= spec.beta <= 1.0:
            raise ConfigError(f"beta must be in [0, 1], got {beta!r}")
        if not spec.threshold > 0.0:
            raise ConfigError(f"threshold must be > 0, got {threshold!r}")
        self._backend = kernels.check_backend(opts["backend"])
        self._spec = spec

    @property
    def spec(self):
        """The layer's options resolved for the kernels (:class:`~tspike_lab.kernels.LIFSpec`)."""
        return self._spec

    @property
    def learn_graded_spikes_factor(self) -> bool:
        return isinstance(self.graded_spikes_factor, nn.Parameter)

    def amplitude(self, ndim: int) -> torch.Tensor:
        """``a`` shaped to broadcast against a ``[T, B, C, ...]`` tensor of rank ``ndim``."""
        return kernels.broadcast_amplitude(self.graded_spikes_factor, ndim)

    def extra_repr(self) -> str:
        a = "per-channel" if self.num_channels else "per-layer"
        learn = ", learned a" if self.learn_graded_spikes_factor else ""
        return (
            f"{self.kind}, beta={self.beta}, threshold={self.threshold}, "
            f"reset={self.reset_mechanism}, spike_grad={self.spike_grad!r}, {a}{learn}"
        )

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() < 2:
            raise ValueError(f"x_seq must be [T, B, ...] (rank >= 2), got shape {tuple(x_seq.shape)}")
        if self.num_channels and (x_seq.dim() < 3 or x_seq.shape[2] != self.num_channels):
            raise ValueError(
                f"x_seq must have {self.num_channels} channels at dim 2 ([T, B, C, ...]), "
                f"got shape {tuple(x_seq.shape)}"
            )
        if not self.record:
            # The C kernel writes a * b as it fires and reduces dL/da in its backward.
            return self._lif(x_seq, amplitude=self.graded_spikes_factor)[0]
        b_seq, mem_seq = self._lif(x_seq)
        self.mem_seq, self.b_seq = mem_seq.detach(), b_seq.detach()
        return b_seq * self.amplitude(x_seq.dim())

    def _lif(self, x_seq, amplitude=None):
        """``(out_seq, mem_seq)`` on ``self.backend`` (see :mod:`tspike_lab.kernels`).

        ``out_seq`` is ``amplitude * b_seq`` if an amplitude is given, else ``b_seq``;
        ``mem_seq`` is None unless ``self.record``: the fast paths then skip writing it.
        """
        return kernels.lif_seq_spec(
            x_seq, self._spec, backend=self._backend, amplitude=amplitude, return_mem=self.record
        )


def reset(net: nn.Module) -> nn.Module:
    """Reset the hidden state of every snnTorch-style neuron inside ``net`` only.

    Walks ``net.modules()`` (unlike ``snntorch.utils.reset``, which resets every neuron
    ever built); other networks' neurons are untouched. Returns ``net``.
    """
    for m in net.modules():
        if isinstance(m, SpikingNeuron) and hasattr(m, "reset_mem"):
            m.reset_mem()
    return net
