"""Probes: record membranes and spikes of every spiking layer, firing rates, amplitudes.

A recording is a plain dict, one entry per spiking layer in forward order::

    {name: {"mem": [T, B, ...], "spikes": [T, B, ...], "amplitude": tensor,
            "kind": "binary" | "ternary", "threshold": float}}

``"spikes"`` holds the unscaled ``b`` in {0, 1} or {-1, 0, 1}; the layer emits
``amplitude * b`` (a <-> ``graded_spikes_factor``, Eq. 13-14). ``"mem"`` is the membrane
each spike was fired on. All tensors are detached.

The model runs in its current mode, without gradients. In training mode BatchNorm uses
batch statistics and updates its running statistics: call ``model.eval()`` first to
probe the network as it runs at inference.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .models import spiking_layers

__all__ = ["Recorder", "record", "firing_rates", "amplitudes", "membrane_histograms"]


def _layers(model: nn.Module):
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    layers = [(n, m) for n, m in spiking_layers(model) if hasattr(m, "record")]
    if not layers:
        raise ValueError(f"model ({type(model).__name__}) has no spiking layer with a `record` flag")
    return layers


class Recorder:
    """Context manager: every spiking layer of ``model`` records while inside.

    On exit the last forward pass's recording is kept in ``.recording``, the layers'
    ``record`` flags are restored, and layers that were not recording before drop their
    stored tensors. ``read()`` returns the recording so far while inside.

    Example::

        with Recorder(model) as rec:
            model(x)
        rec.recording["stem_lif"]["spikes"]  # [T, B, C, H, W]
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers = _layers(model)
        self.recording: dict[str, dict] = {}
        self._saved = None

    def __enter__(self) -> Recorder:
        self._saved = [(m, m.record, m.mem_seq, m.b_seq) for _, m in self.layers]
        for _, m in self.layers:
            m.record = True
            m.mem_seq = m.b_seq = None
        return self

    def read(self) -> dict[str, dict]:
        """The recording of the last forward pass; layers that did not run are left out."""
        out = {}
        for name, m in self.layers:
            if m.mem_seq is None:
                continue
            out[name] = {
                "mem": m.mem_seq,
                "spikes": m.b_seq,
                "amplitude": m.graded_spikes_factor.detach().clone(),
                "kind": m.kind,
                "threshold": float(m.threshold),
            }
        return out

    def __exit__(self, *exc) -> None:
        self.recording = self.read()
        for m, flag, mem_seq, b_seq in self._saved:
            m.record = flag
            if not flag:
                m.mem_seq, m.b_seq = mem_seq, b_seq
        self._saved = None


def record(model: nn.Module, x: torch.Tensor) -> dict[str, dict]:
    """Run one forward pass without gradients and return every spiking layer's recording.

    The model keeps its mode (see the module docstring); ``record`` flags are restored.

    Args:
        model: a network containing spiking layers (e.g. from ``build_model``).
        x: its input, e.g. ``[B, C, H, W]`` or ``[T, B, C, H, W]``.
    Returns:
        ``{name: {"mem", "spikes", "amplitude", "kind", "threshold"}}`` in forward order.
    """
    with torch.no_grad(), Recorder(model) as rec:
        model(x)
    return rec.recording


def firing_rates(model_or_recording, x: torch.Tensor | None = None) -> dict[str, dict]:
    """Fraction of neuron-steps that spike, per layer; a -1 spike counts as a spike.

        rate = #{b != 0} / numel,   pos_rate = #{b > 0} / numel,   neg_rate = #{b < 0} / numel

    Args:
        model_or_recording: a recording from :func:`record`, or a model (then ``x`` is needed).
        x: the input when a model is given.
    Returns:
        ``{name: {"rate", "pos_rate", "neg_rate", "spikes", "positive", "negative", "numel"}}``;
        the counts are ints, so rates can be pooled over layers exactly.
    """
    recording = _recording(model_or_recording, x)
    out = {}
    for name, entry in recording.items():
        b = entry["spikes"]
        pos, neg, numel = int((b > 0).sum()), int((b < 0).sum()), b.numel()
        denom = max(numel, 1)
        out[name] = {
            "rate": (pos + neg) / denom,
            "pos_rate": pos / denom,
            "neg_rate": neg / denom,
            "spikes": pos + neg,
            "positive": pos,
            "negative": neg,
            "numel": numel,
        }
    return out


def _recording(model_or_recording, x):
    if isinstance(model_or_recording, nn.Module):
        if x is None:
            raise ValueError("x must be given when model_or_recording is a model, got x=None")
        return record(model_or_recording, x)
    if isinstance(model_or_recording, dict):
        return model_or_recording
    raise ValueError(
        f"model_or_recording must be an nn.Module or a recording dict, got {type(model_or_recording).__name__}"
    )


def amplitudes(model: nn.Module) -> dict[str, float | list[float]]:
    """Every spiking layer's amplitude a (``graded_spikes_factor``): a float, or a list per channel."""
    out = {}
    for name, m in _layers(model):
        a = m.graded_spikes_factor.detach().cpu()
        out[name] = a.item() if a.dim() == 0 else a.tolist()
    return out


def membrane_histograms(recording: dict, bins: int = 50, range: tuple[float, float] | None = None) -> dict[str, dict]:
    """Histogram of each layer's recorded membrane potentials, as numpy arrays.

    Args:
        recording: from :func:`record`.
        bins: number of bins (>= 1).
        range: ``(low, high)`` shared by all layers; default each layer's own (min, max).
    Returns:
        ``{name: {"counts": int64 [bins], "edges": float64 [bins + 1], "threshold": float}}``.
    """
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    if range is not None and (len(range) != 2 or not float(range[0]) < float(range[1])):
        raise ValueError(f"range must be None or (low, high) with low < high, got {range!r}")
    out = {}
    for name, entry in recording.items():
        mem = entry["mem"].detach().flatten().double().cpu().numpy()
        counts, edges = np.histogram(mem, bins=bins, range=range)
        out[name] = {"counts": counts.astype(np.int64), "edges": edges, "threshold": entry.get("threshold")}
    return out
