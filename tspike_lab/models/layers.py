"""Building blocks of the networks: time-folded stateless layers and neuron factories.

Convolutions and pooling run once on the time-folded batch ``[T, B, ...] -> [T*B, ...]``, as
the released code's ``SpikePool``; only the neurons loop over time. BatchNorm comes two ways,
as in the released code:

- inside a residual block (``bn1``, ``bn2``, the shortcut's BN) the released ``myBatchNorm3d``
  normalises over (B, T, H, W) per channel: statistics over the folded T*B batch, as here;
- outside the blocks (the stems, every VGG BN) the released ``SpikeConv`` runs the
  ``BatchNorm2d`` once per time step: in training, statistics over B for each step t and the
  running statistics updated T times per forward. ``ConvBN(step_bn=True)`` does that;
  ``step_bn=False`` (our folded variant) normalises over T*B and updates once.

In eval mode both give the same function of the running statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import nn

from ..errors import ConfigError
from ..neurons import MultiStepLIF

__all__ = ["NEURONS", "NeuronKind", "AMPLITUDES", "ConvBN", "TimeFold", "ScaledIdentity", "SpikingNet"]

AMPLITUDES = ("layer", "channel")


@dataclass(frozen=True)
class NeuronKind:
    """A network's neuron: its spike (binary {0, 1} or ternary {-1, 0, 1}), whether a is learned, how it is shown.

    Calling it builds one spiking layer: ``NEURONS["trainable_ternary"](num_channels)``.
    """

    name: str
    spike: str  # "binary" | "ternary" (tspike_lab.functional.KINDS)
    trainable: bool  # learned amplitude a (Eq. 13-14)
    label: str  # display name
    color: str  # one colour per neuron across every figure (tspike_lab.viz reads it here)

    def __call__(self, num_channels: int, *, amplitude: str = "layer", **lif_kwargs) -> MultiStepLIF:
        """One :class:`MultiStepLIF` of this kind; ``amplitude="channel"`` learns one a per channel."""
        if amplitude not in AMPLITUDES:
            raise ConfigError.bad("", "amplitude", amplitude, f"one of {AMPLITUDES}")
        return MultiStepLIF(
            self.spike,
            learn_graded_spikes_factor=self.trainable,
            num_channels=num_channels if (self.trainable and amplitude == "channel") else None,
            **lif_kwargs,
        )


# The registry of neurons, in the order tables show them: the paper's three columns
# (binary, ternary, trainable ternary), then our extra control.
NEURONS = MappingProxyType(
    {
        n.name: n
        for n in (
            NeuronKind("binary", "binary", False, "binary", "#1f77b4"),
            NeuronKind("ternary", "ternary", False, "ternary", "#d62728"),
            NeuronKind("trainable_ternary", "ternary", True, "trainable ternary", "#2ca02c"),
            NeuronKind("trainable_binary", "binary", True, "trainable binary", "#9467bd"),
        )
    }
)


class TimeFold(nn.Module):
    """Run a stateless module on ``[T, B, ...]`` by folding time into batch."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        y = self.module(x_seq.flatten(0, 1))  # [T, B, ...] -> [T*B, ...]
        return y.unflatten(0, x_seq.shape[:2])


class ConvBN(nn.Module):
    """Conv2d + BatchNorm2d on ``[T, B, C, H, W]``, the convolution on the time-folded batch.

    ``step_bn``: in training, BatchNorm normalises each time step over its own B samples and
    updates its running statistics once per step (the released ``SpikeConv``); False: over
    all T*B samples, one update (the released ``myBatchNorm3d``). ``bn`` becomes
    ``nn.Identity`` after ``reparameterize(fold_bn=True)``.
    """

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, bias=False, step_bn: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, bias=bias)
        self.bn = nn.BatchNorm2d(out_ch)
        self.step_bn = bool(step_bn)

    def forward_static(self, x: torch.Tensor, num_steps: int = 1) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C', H', W']``: one step of a static input repeated ``num_steps`` times.

        With ``step_bn`` in training, BatchNorm sees the same batch at each of the ``num_steps``
        steps: the output is that of one step, the running statistics are updated ``num_steps``
        times (as the released code, which convolves the repeated image T times).
        """
        y = self.conv(x)
        if not (self.step_bn and self.training):
            return self.bn(y)
        with torch.no_grad():
            for _ in range(num_steps - 1):
                self.bn(y)  # the earlier steps: same output, they only move the running statistics
        return self.bn(y)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        y = self.conv(x_seq.flatten(0, 1)).unflatten(0, x_seq.shape[:2])  # [T, B, C, H, W]
        if self.step_bn and self.training:
            return torch.stack([self.bn(y_t) for y_t in y.unbind(0)])  # statistics per step t over B
        return self.bn(y.flatten(0, 1)).unflatten(0, x_seq.shape[:2])  # statistics over T*B

    def extra_repr(self) -> str:
        return "step_bn=True" if self.step_bn else ""


class ScaledIdentity(nn.Module):
    """Identity shortcut ``x -> scale * x``; ``scale`` is None (identity) until re-parameterization.

    After folding, the shortcut receives b in {-1, 0, 1} and adds ``scale * b``, i.e.
    +a or -a or nothing: still an addition, no multiplication.
    """

    def __init__(self):
        super().__init__()
        # None, not a tensor of 1: the forward then needs no value check (a device sync on CUDA)
        self.register_buffer("scale", None)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return x_seq if self.scale is None else x_seq * self.scale

    def extra_repr(self) -> str:
        return "identity" if self.scale is None else f"scale shape={tuple(self.scale.shape)}"


class SpikingNet(nn.Module):
    """Base of the networks: direct encoding, time-first features, logits averaged over T.

    Subclasses define ``stem`` (a :class:`ConvBN`), ``stem_lif``, ``features(x_seq)``
    (after the stem neuron), ``classifier`` and ``fold_plan()``.
    """

    num_steps: int
    in_channels: int

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode input to the stem neuron's output ``[T, B, C, H, W]``.

        Raises ConfigError for input of another rank or channel count, or event frames whose T
        (``x.shape[0]``) is not the model's ``num_steps``.
        """
        if x.dim() not in (4, 5):
            raise ConfigError(
                f"input must be [B, C, H, W] (static image) or [T, B, C, H, W] (event frames), "
                f"got shape {tuple(x.shape)}",
                field="input",
                value=tuple(x.shape),
                allowed="[B, C, H, W] or [T, B, C, H, W]",
            )
        if x.shape[-3] != self.in_channels:
            raise ConfigError(
                f"input has {x.shape[-3]} channels at dim -3, the model expects in_channels={self.in_channels}",
                field="in_channels",
                value=x.shape[-3],
                allowed=str(self.in_channels),
            )
        if x.dim() == 5 and x.shape[0] != self.num_steps:
            raise ConfigError(
                f"input [T, B, C, H, W] of shape {tuple(x.shape)} has T={x.shape[0]} steps at dim 0, the model was "
                f"built for num_steps={self.num_steps}; build it with num_steps={x.shape[0]} or give "
                f"{self.num_steps} frames",
                field="num_steps",
                value=x.shape[0],
                allowed=str(self.num_steps),
            )
        if x.dim() == 4:
            # Direct encoding: the image repeats over T, so the stem conv + BN is computed
            # once and expanded (identical per step; the paper's code computes it T times).
            cur = self.stem.forward_static(x, self.num_steps)
            cur_seq = cur.unsqueeze(0).expand(self.num_steps, *cur.shape)
        else:
            cur_seq = self.stem(x)
        return self.stem_lif(cur_seq)

    def forward(self, x: torch.Tensor, return_seq: bool = False) -> torch.Tensor:
        """Logits ``[B, K]`` averaged over T, or per step ``[T, B, K]`` if ``return_seq``."""
        spk_seq = self.features(self.stem_forward(x))  # [T, B, C, H, W]
        pooled = spk_seq.mean(dim=(-2, -1))  # global average pool -> [T, B, C]
        logits_seq = self.classifier(pooled)  # [T, B, K]
        return logits_seq if return_seq else logits_seq.mean(0)

    def fold_plan(self):
        """``[(lif, [consumers])]``: which layers read each spiking layer's output."""
        raise NotImplementedError
