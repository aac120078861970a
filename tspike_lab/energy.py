"""Synaptic-operation counting and energy estimates (45 nm, 32-bit float figures).

Every ``nn.Conv2d`` and ``nn.Linear`` inside a model is watched with a forward hook
during one forward pass; what it executes is counted from its actual input:

- dense input (the real-valued image, average-pooled spikes, ...): every weight
  application is a multiply-accumulate,
      MACs = output elements · (C_in / groups) · k_h · k_w      (Linear: · in_features)
- spike input: each nonzero entry triggers one accumulate per weight it meets (+w for
  +1, -w for -1; the multiplication-free argument, paper Sec. "multiplication-free"),
      SOPs = sum over nonzero inputs of the (output position, output channel) pairs they feed
  (Linear: nnz(input) · out_features). Padding contributes nothing.

An input counts as spikes when, in every input channel, its nonzero entries share one
magnitude: ``b`` in {0, 1} or {-1, 0, 1} times a per-layer or per-channel amplitude
``a``, which re-parameterization folds into the weights (Eq. 15-17). Average-pooled
spikes (VGG after each pool, the ImageNet ResNets after the stem pool, the classifier
after global pooling) take several magnitudes and are counted as dense MACs: that is
what the layer computes, though pool and layer could be fused into an accumulate-only one.
Bias additions, BatchNorm (folded at inference), shortcuts and neuron updates are not
counted: synaptic operations only.

Two conventions, both reported:

- "executed": what this library runs. A static image's stem convolution runs once and
  is expanded over the T steps (``SpikingNet.stem_forward``), so it counts once.
- "paper": the released code repeats a static image T times and runs the stem on the
  time-folded batch, so the stem counts T times. Everything else is the same.

Energy: ``E = E_MAC · MACs + E_AC · SOPs`` with E_MAC = 4.6 pJ and E_AC = 0.9 pJ (32-bit
float multiply-add and add at 45 nm, Horowitz, ISSCC 2014), the figures SNN papers use.

The paper's Table 5 counts differently (:func:`table5_counts`): #Flops are the real-valued first
layer's MACs only (its static-image stem, T times), #Sops every accumulate driven by spikes, and
#Sign one sign decision per neuron and step for a binary neuron (u >= th) and two for a ternary one
(u >= th, u <= -th). Its energies are reproduced by ``TABLE5_PJ``: 12.5 pJ per FLOP, 77 fJ per SOP
and 3.7 pJ per sign decision (constants derived from the table; the paper prints none).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .probes import record

__all__ = [
    "E_MAC_PJ",
    "E_AC_PJ",
    "CONVENTIONS",
    "LayerOps",
    "OpCount",
    "energy_pj",
    "is_spike_input",
    "conv_sops",
    "linear_sops",
    "conv_macs",
    "linear_macs",
    "count_ops",
    "ann_equivalent",
    "TABLE5_PJ",
    "table5_energy_uj",
    "table5_counts",
]

E_MAC_PJ = 4.6
E_AC_PJ = 0.9
# Guo et al. 2024, Table 5 prints no energy constants. With a sign decision at 3.7 pJ (a 32-bit
# float multiply at 45 nm, Horowitz 2014) its two rows solve to 12.50 pJ per FLOP and 0.0769 pJ
# per SOP; the round figures below reproduce both printed energies to 0.01 µJ.
TABLE5_PJ = {"flop": 12.5, "sop": 0.077, "sign": 3.7}
CONVENTIONS = ("executed", "paper")


def energy_pj(macs: float, sops: float = 0.0, *, e_mac_pj: float = E_MAC_PJ, e_ac_pj: float = E_AC_PJ) -> float:
    """Energy in pJ: ``E = e_mac_pj · MACs + e_ac_pj · SOPs`` (1 pJ = 1e-12 J)."""
    for name, value in (("macs", macs), ("sops", sops), ("e_mac_pj", e_mac_pj), ("e_ac_pj", e_ac_pj)):
        if not float(value) >= 0.0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(e_mac_pj) * float(macs) + float(e_ac_pj) * float(sops)


def is_spike_input(x: torch.Tensor, channel_dim: int = 1) -> bool:
    """True if, in every channel, the nonzero entries of ``x`` share one magnitude (``a · b``)."""
    mag = x.detach().abs().movedim(channel_dim, 0).flatten(1)  # [C, rest]
    if mag.numel() == 0:
        return True
    a = mag.amax(1, keepdim=True)
    return bool(((mag == 0) | (mag == a)).all())


def conv_macs(conv: nn.Conv2d, y: torch.Tensor) -> int:
    """Dense MACs of a convolution that produced ``y``: ``numel(y) · C_in/groups · k_h · k_w``."""
    kh, kw = conv.kernel_size
    return y.numel() * (conv.in_channels // conv.groups) * kh * kw


def linear_macs(linear: nn.Linear, y: torch.Tensor) -> int:
    """Dense MACs of a linear layer that produced ``y``: ``numel(y) · in_features``."""
    return y.numel() * linear.in_features


def conv_sops(conv: nn.Conv2d, x: torch.Tensor) -> int:
    """Accumulates a convolution performs on input ``x``: one per (nonzero input, weight it meets).

        SOPs = sum_{n, g, p} #{nonzero inputs of group g in the receptive field of p} · C_out/groups

    computed as ``conv2d(1[x != 0], ones[groups, C_in/groups, k_h, k_w])`` with the layer's
    stride, padding and dilation. Shape: ``x`` is ``[N, C_in, H, W]`` (or ``[C_in, H, W]``).
    """
    mask = (x.detach() != 0).double()
    if mask.dim() == 3:
        mask = mask.unsqueeze(0)
    g = conv.groups
    ones = torch.ones(g, conv.in_channels // g, *conv.kernel_size, dtype=mask.dtype, device=mask.device)
    if conv.padding_mode != "zeros":
        # reflect / replicate / circular padding copies real inputs, which then fire too
        mask = F.pad(mask, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    else:
        padding = conv.padding
    fan = F.conv2d(mask, ones, None, conv.stride, padding, conv.dilation, g)  # [N, g, H', W']
    return int(round(fan.sum().item())) * (conv.out_channels // g)


def linear_sops(linear: nn.Linear, x: torch.Tensor) -> int:
    """Accumulates a linear layer performs on input ``x``: ``nnz(x) · out_features``."""
    return int((x.detach() != 0).sum()) * linear.out_features


@dataclass
class LayerOps:
    """Operations of one Conv2d / Linear in one forward pass, summed over its calls.

    ``items``: image-steps it processed (T·B, or B for a static stem). ``macs`` / ``sops``:
    executed on dense / spike input. ``dense_macs``: the same calls counted as dense MACs.
    ``ann_macs``: MACs of one image through this layer once (the ANN equivalent).
    ``paper_repeat``: T where the layer ran once for all T steps (static stem), else 1.
    """

    name: str
    op: str
    input: str
    items: int
    macs: int
    sops: int
    dense_macs: int
    ann_macs: int
    paper_repeat: int

    @property
    def spike_rate(self) -> float:
        """SOPs per dense MAC: the fraction of the dense work spikes trigger (0 for dense input)."""
        return self.sops / self.dense_macs if self.dense_macs else 0.0


@dataclass
class OpCount:
    """Result of :func:`count_ops`: per-layer rows and per-sample totals.

    ``total(convention)`` -> ``{"macs", "sops", "energy_pj"}`` per sample;
    ``to_dict()`` -> plain JSON-ready dict.
    """

    layers: list[LayerOps]
    batch_size: int
    num_steps: int
    e_mac_pj: float = E_MAC_PJ
    e_ac_pj: float = E_AC_PJ
    notes: str = field(default="executed: what ran (static stem once); paper: static stem counted T times")

    def total(self, convention: str = "executed") -> dict:
        """Per-sample MACs, SOPs and energy (pJ) under ``convention`` ("executed" or "paper")."""
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        rep = (lambda r: r.paper_repeat) if convention == "paper" else (lambda r: 1)
        macs = sum(r.macs * rep(r) for r in self.layers) / self.batch_size
        sops = sum(r.sops * rep(r) for r in self.layers) / self.batch_size
        e = energy_pj(macs, sops, e_mac_pj=self.e_mac_pj, e_ac_pj=self.e_ac_pj)
        return {"macs": macs, "sops": sops, "energy_pj": e}

    def ann(self) -> dict:
        """Per-sample MACs and energy (pJ) of the same architecture run once as an ANN."""
        macs = sum(r.ann_macs for r in self.layers)
        return {"macs": macs, "energy_pj": energy_pj(macs, 0, e_mac_pj=self.e_mac_pj, e_ac_pj=self.e_ac_pj)}

    def to_dict(self) -> dict:
        return {
            "layers": [dataclasses.asdict(r) for r in self.layers],
            "batch_size": self.batch_size,
            "num_steps": self.num_steps,
            "e_mac_pj": self.e_mac_pj,
            "e_ac_pj": self.e_ac_pj,
            "executed": self.total("executed"),
            "paper": self.total("paper"),
            "ann": self.ann(),
            "notes": self.notes,
        }


def _batch_and_steps(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    if x.dim() == 5:  # [T, B, C, H, W] event frames
        return x.shape[1], x.shape[0]
    return x.shape[0], int(getattr(model, "num_steps", 1))


@torch.no_grad()
def count_ops(model: nn.Module, x: torch.Tensor, *, e_mac_pj: float = E_MAC_PJ, e_ac_pj: float = E_AC_PJ) -> OpCount:
    """Count the MACs and SOPs of every Conv2d / Linear in one forward pass of ``model`` on ``x``.

    Runs without gradients in the model's current mode (call ``model.eval()`` first:
    training-mode BatchNorm uses batch statistics and updates its running ones).

    Args:
        model: any module; a ``SpikingNet`` gives T from ``num_steps`` for static input.
        x: ``[B, C, H, W]`` (static image, T = ``model.num_steps``) or ``[T, B, C, H, W]``.
        e_mac_pj, e_ac_pj: energy per MAC and per accumulate.
    Returns:
        :class:`OpCount`; ``.total("executed")``, ``.total("paper")``, ``.ann()``, ``.to_dict()``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a tensor with a batch dim, got {getattr(x, 'shape', type(x).__name__)}")
    batch, steps = _batch_and_steps(model, x)
    rows: dict[str, LayerOps] = {}

    def hook(name, module, args, y):
        inp = args[0]
        if isinstance(module, nn.Conv2d):
            op, dense = "conv", conv_macs(module, y)
            items = y.shape[0] if y.dim() == 4 else 1
            spikes = is_spike_input(inp, channel_dim=-3)
            sops = conv_sops(module, inp) if spikes else 0
        else:
            op, dense = "linear", linear_macs(module, y)
            items = y.numel() // module.out_features
            spikes = is_spike_input(inp, channel_dim=-1)
            sops = linear_sops(module, inp) if spikes else 0
        # a layer that ran on B items while the network has T > 1 steps ran once for all T
        repeat = steps if (steps > 1 and items == batch) else 1
        row = rows.get(name)
        kind = "spikes" if spikes else "dense"
        if row is None:
            rows[name] = LayerOps(name, op, kind, 0, 0, 0, 0, 0, repeat)
            row = rows[name]
        elif row.input != kind:
            row.input = "mixed"
        row.items += items
        row.macs += 0 if spikes else dense
        row.sops += sops
        row.dense_macs += dense
        row.ann_macs += dense // max(items, 1) if items else 0

    handles = [
        m.register_forward_hook(lambda mod, args, y, name=name: hook(name, mod, args, y))
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return OpCount(list(rows.values()), batch, steps, float(e_mac_pj), float(e_ac_pj))


def ann_equivalent(model: nn.Module, x: torch.Tensor) -> dict:
    """MACs and energy (pJ) per sample of the same architecture as an ANN: one pass, dense input.

    Every Conv2d / Linear counts ``numel(output of one image) · fan-in`` MACs once, no T.
    Returns ``{"macs", "energy_pj", "layers": {name: macs}}``.
    """
    counts = count_ops(model, x)
    out = counts.ann()
    out["layers"] = {r.name: r.ann_macs for r in counts.layers}
    return out


def table5_energy_uj(flops: float, sops: float, sign: float, pj: dict | None = None) -> float:
    """Energy in µJ as the paper's Table 5 reproduces: ``(12.5 pJ·Flops + 0.077 pJ·Sops + 3.7 pJ·Sign) / 1e6``."""
    pj = TABLE5_PJ if pj is None else pj
    return (pj["flop"] * flops + pj["sop"] * sops + pj["sign"] * sign) / 1e6


@torch.no_grad()
def table5_counts(model: nn.Module, x: torch.Tensor, *, chunk_size: int = 256) -> dict:
    """Per-sample #Flops, #Sops, #Sign and energy (µJ) of ``model`` on ``x``, counted as the paper's Table 5.

    - #Flops: MACs of the first layer (the real-valued input), counted T times for a static image
      (the released code runs the stem on the time-folded batch).
    - #Sops: accumulates driven by spikes in every layer (a -1 spike counts like a +1), the
      static stem convention as #Flops ("paper" convention of :func:`count_ops`).
    - #Sign: sign decisions of the neurons, one per neuron and step for binary spikes (u >= th),
      two for ternary ones (u >= th and u <= -th).
    - other_dense_macs: dense MACs the paper's columns leave out (average-pooled spikes into a
      conv, the classifier after global pooling), reported, not priced.

    Args:
        model: a spiking network in eval mode. x: ``[B, C, H, W]`` or ``[T, B, C, H, W]``.
        chunk_size: images per forward pass (the recording holds every membrane of a chunk); the
            per-sample averages are the same for any chunking.
    Returns:
        ``{"flops", "sops", "sign", "energy_uj", "other_dense_macs", "neuron_steps", "firing_rate"}``.
    """
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    batch_dim = 1 if x.dim() == 5 else 0
    n = x.shape[batch_dim]
    if n > chunk_size:  # per-sample averages, weighted by chunk size: the same as one pass over x
        parts = [(c.shape[batch_dim], _table5_counts(model, c)) for c in x.split(chunk_size, dim=batch_dim)]
        out = {k: sum(m * p[k] for m, p in parts) / n for k in parts[0][1]}
        out["firing_rate"] = sum(m * p["firing_rate"] * p["neuron_steps"] for m, p in parts) / (n * out["neuron_steps"])
        return out
    return _table5_counts(model, x)


def _table5_counts(model: nn.Module, x: torch.Tensor) -> dict:
    counts = count_ops(model, x)
    batch = counts.batch_size
    first = counts.layers[0]
    flops = first.macs * first.paper_repeat / batch
    paper = counts.total("paper")
    recording = record(model, x)
    neuron_steps = sum(r["spikes"].numel() for r in recording.values()) / batch
    sign = sum(r["spikes"].numel() * (2 if r["kind"] == "ternary" else 1) for r in recording.values()) / batch
    fired = sum(int(r["spikes"].count_nonzero()) for r in recording.values()) / batch
    return {
        "flops": flops,
        "sops": paper["sops"],
        "sign": sign,
        "energy_uj": table5_energy_uj(flops, paper["sops"], sign),
        "other_dense_macs": paper["macs"] - flops,
        "neuron_steps": neuron_steps,
        "firing_rate": fired / neuron_steps if neuron_steps else 0.0,
    }
