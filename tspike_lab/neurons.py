"""Spiking neuron modules: snnTorch-compatible single-step, and multi-step ``[T, B, ...]``.

Paper symbols -> code names: tau <-> ``beta`` (0.25), V_th <-> ``threshold`` (0.5, the
released code's effective threshold), a <-> ``graded_spikes_factor`` (Eq. 13-14),
trainable a <-> ``learn_graded_spikes_factor=True``.
"""
from __future__ import annotations

import torch
from torch import nn

import snntorch
from snntorch._neurons.neurons import SpikingNeuron

from . import functional, surrogate

__all__ = ["TernaryLeaky", "BinaryLeaky", "MultiStepLIF", "SpikingLayer", "reset"]


class _PaperLeaky(snntorch.Leaky):
    """``snntorch.Leaky`` with the paper's neuron: hard reset by |b| of either sign."""

    _kind = "ternary"

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
        functional.check_reset(reset_mechanism)
        for name, value in (("inhibition", inhibition), ("learn_threshold", learn_threshold)):
            if value:
                raise ValueError(f"{name}={value!r} is not supported by {type(self).__name__}; allowed: False")
        if not reset_delay:
            raise ValueError(
                "reset_delay=False is not supported: the paper applies the reset of step t "
                "while charging step t+1 (reset_delay=True)"
            )
        super().__init__(
            beta,
            threshold=threshold,
            spike_grad=surrogate.get(spike_grad),
            surrogate_disable=surrogate_disable,
            init_hidden=init_hidden,
            inhibition=False,
            learn_beta=learn_beta,
            learn_threshold=False,
            reset_mechanism=reset_mechanism,
            state_quant=state_quant,
            output=output,
            graded_spikes_factor=graded_spikes_factor,
            learn_graded_spikes_factor=learn_graded_spikes_factor,
            reset_delay=True,
        )
        self.detach_reset = bool(detach_reset)
        # No global registry: reset a network with tspike_lab.reset(net).
        try:
            SpikingNeuron.instances.remove(self)
        except ValueError:
            pass

    @property
    def kind(self) -> str:
        return self._kind

    def _spike(self, mem):
        if self.state_quant:
            mem = self.state_quant(mem)
        return functional.fire(mem, self.threshold, self._kind, self.spike_grad)

    def fire(self, mem):
        """``o_t = a * b_t``."""
        return self._spike(mem) * self.graded_spikes_factor

    def mem_reset(self, mem):
        """Reset signal from the previous membrane: |b| for "zero", b for "subtract"."""
        b = self._spike(mem)
        if self.detach_reset:
            b = b.detach()
        return b.abs() if self.reset_mechanism_val == 1 else b

    def reset_mem(self):
        self.mem = torch.zeros(0, device=self.mem.device)
        return self.mem


class TernaryLeaky(_PaperLeaky):
    """Ternary LIF, a drop-in ``snntorch.Leaky`` (paper Eq. 7-8, 13-14).

        u_t = beta * u_{t-1} * (1 - |b_{t-1}|) + x_t,   b_t in {-1, 0, 1},   o_t = a * b_t

    Use it like ``snn.Leaky``: ``spk, mem = lif(x, mem)``; ``init_hidden=True`` inside
    ``nn.Sequential``; ``output=True``. Defaults follow the paper's released code (beta
    0.25, threshold 0.5, hard reset, clipped STE); ``spike_grad`` takes our surrogates
    or any snnTorch one (then ``b = f(u - th) - f(-u - th)``). Per-channel amplitude:
    pass ``graded_spikes_factor`` shaped to broadcast, e.g. ``torch.ones(C, 1, 1)``.

    Shape: input ``[B, ...]`` -> spk, mem ``[B, ...]``.
    """

    _kind = "ternary"


class BinaryLeaky(_PaperLeaky):
    """Binary LIF with the paper's defaults (the baseline): ``b_t = 1[u_t >= threshold]``."""

    _kind = "binary"


class SpikingLayer(nn.Module):
    """Base of the multi-step spiking layers; ``spiking_layers(model)`` finds these."""


class MultiStepLIF(SpikingLayer):
    """Multi-step LIF over ``[T, B, C, ...]``, binary or ternary, with amplitude ``a``.

        u_t = beta * u_{t-1} * (1 - |b_{t-1}|) + x_t;   out_t = a * b_t

    Numerically the loop of :class:`TernaryLeaky` / :func:`functional.lif_step` over t,
    in forward and in gradients. State starts at zero on every call (one sample = one
    sequence), so there is nothing to reset between batches.

    Args:
        kind: "binary" or "ternary".
        graded_spikes_factor: a, initial value (1.0, the released code's init).
        learn_graded_spikes_factor: train a (Eq. 13-14).
        num_channels: if given, one a per channel (dim 2 of the input) instead of one per layer.
        detach_reset: cut the gradient through the reset path (the paper's code does not).
        record: keep the last ``mem_seq`` and ``b_seq`` (detached) for probes.
    Shape: ``[T, B, ...]`` -> ``[T, B, ...]``.
    """

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
        self.kind = functional.check_kind(kind)
        self.reset_mechanism = functional.check_reset(reset_mechanism)
        if not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta!r}")
        if not float(threshold) > 0.0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        if num_channels is not None and (not isinstance(num_channels, int) or num_channels < 1):
            raise ValueError(f"num_channels must be None or a positive int, got {num_channels!r}")
        self.beta = float(beta)
        self.threshold = float(threshold)
        self.spike_grad = surrogate.get(spike_grad)
        self.detach_reset = bool(detach_reset)
        self.num_channels = num_channels
        self.backend = backend
        a = torch.full((num_channels,) if num_channels else (), float(graded_spikes_factor))
        if learn_graded_spikes_factor:
            self.graded_spikes_factor = nn.Parameter(a)
        else:
            self.register_buffer("graded_spikes_factor", a)
        self.record = False
        self.mem_seq: torch.Tensor | None = None
        self.b_seq: torch.Tensor | None = None

    @property
    def learn_graded_spikes_factor(self) -> bool:
        return isinstance(self.graded_spikes_factor, nn.Parameter)

    def amplitude(self, ndim: int) -> torch.Tensor:
        """``a`` shaped to broadcast against a ``[T, B, C, ...]`` tensor of rank ``ndim``."""
        from .kernels import broadcast_amplitude

        return broadcast_amplitude(self.graded_spikes_factor, ndim)

    def extra_repr(self) -> str:
        a = "per-channel" if self.num_channels else "per-layer"
        learn = ", learned a" if self.learn_graded_spikes_factor else ""
        return (f"{self.kind}, beta={self.beta}, threshold={self.threshold}, "
                f"reset={self.reset_mechanism}, spike_grad={self.spike_grad!r}, {a}{learn}")

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
        from . import kernels  # lazily: the kernel modules load on the first forward

        return kernels.lif_seq(
            x_seq,
            amplitude=amplitude,
            beta=self.beta,
            threshold=self.threshold,
            kind=self.kind,
            reset_mechanism=self.reset_mechanism,
            spike_grad=self.spike_grad,
            detach_reset=self.detach_reset,
            backend=self.backend,
            return_mem=self.record,
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
