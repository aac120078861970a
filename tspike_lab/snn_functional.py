"""``snntorch.functional`` for signed spikes {-a, 0, a}: metrics and losses, a drop-in.

    import tspike_lab.snn_functional as SF        # instead of: import snntorch.functional as SF

snnTorch's helpers assume spikes in {0, 1}. Those that sum spikes over time read a ternary
train as its net count ``sum_t spk_t`` (what the paper's output layer reads as logits) and
hold; they are snnTorch's own objects, re-exported: ``accuracy_rate``, ``ce_rate_loss``,
``ce_count_loss``, ``mse_count_loss`` (its targets are net counts), ``ce_max_membrane_loss``,
``mse_membrane_loss``. Those that look for a first spike or price every spike do not, and
are replaced here:

- ``accuracy_temporal``, ``ce_temporal_loss``, ``mse_temporal_loss``: snnTorch multiplies the
  spike by its time, so a -1 becomes a first spike at a negative time, earlier than any +1.
  Here the first spike is the first *positive* one; a -1 is evidence against, never a first spike.
- ``l1_rate_sparsity``: snnTorch's ``Lambda * sum(spk)`` lowers the penalty for every -1.

On spikes in {0, 1} each replacement equals snnTorch's. The losses keep snnTorch's
``__name__``, so ``snntorch.backprop.BPTT`` / ``TBPTT`` accept them.

Every other public name of ``snntorch.functional`` is its own object, re-exported, so switching
the import is safe: the probe monitors (``OutputMonitor``, ``InputMonitor``,
``AttributeMonitor``, ``GradInputMonitor``, ``GradOutputMonitor``), ``SpikeTime``,
``LossFunctions``, and the submodules ``acc``, ``loss``, ``reg``, ``probe``, ``quant`` and
``stdp_learner`` (attributes here; e.g. ``SF.quant.state_quant``).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import snntorch.functional as _sf
import torch
from snntorch.functional import acc as _acc
from snntorch.functional import loss as _loss
from snntorch.functional import reg as _reg

_REPLACED = ("accuracy_temporal", "ce_temporal_loss", "mse_temporal_loss", "l1_rate_sparsity")
_SUBMODULES = tuple(m.name for m in pkgutil.iter_modules(_sf.__path__) if not m.name.startswith("_"))

# snnTorch's own objects for every public name it has that is not replaced here (monitors, SpikeTime, ...).
_REEXPORTED = tuple(n for n in dir(_sf) if not n.startswith("_") and n not in _REPLACED and n not in _SUBMODULES)
globals().update({n: getattr(_sf, n) for n in _REEXPORTED})

__all__ = [
    "positive_spikes",
    *_REPLACED,
    # snnTorch's functions, classes and submodules (not the modules and typing names it happens to import)
    *(n for n in _REEXPORTED if getattr(getattr(_sf, n), "__module__", "").startswith("snntorch.functional")),
    *_SUBMODULES,
]


def __getattr__(name: str) -> ModuleType:
    """``acc``, ``loss``, ``reg``, ``probe``, ``quant``, ``stdp_learner``: snnTorch's submodules, loaded when used."""
    if name in _SUBMODULES:
        module = importlib.import_module(f"snntorch.functional.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))


def positive_spikes(spk_seq: torch.Tensor) -> torch.Tensor:
    """The spikes that fire in a temporal code: ``1[spk > 0]``, gradient passed straight through.

    Shape: any -> the same.
    """
    fired = (spk_seq > 0).to(spk_seq.dtype)
    return fired + (spk_seq - spk_seq.detach())


def accuracy_temporal(spk_out: torch.Tensor, targets: torch.Tensor):
    """Fraction of samples whose first positive spike is the target neuron's.

        pred = argmin_n t_first(n),   t_first = min{t : spk_t > 0}, T - 1 if none (snnTorch's shadow spike)

    Shape: spk_out ``[T, B, N]``, targets ``[B]``. Returns: a numpy float, as snnTorch's.
    """
    return _acc.accuracy_temporal(positive_spikes(spk_out.detach()), targets)


class ce_temporal_loss(_loss.ce_temporal_loss):
    """snnTorch's ``ce_temporal_loss`` on the first positive spike: ``CE(-t_first, target)``
    (``inverse="reciprocal"``: ``CE(1 / (t_first + 1), target)``); ``t_first`` as in
    :func:`accuracy_temporal`, its gradient snnTorch's -1 at that step.

    Shape: spk_rec ``[T, B, N]``, targets ``[B]`` class indices.
    """

    def __call__(self, spk_rec, targets):
        return super().__call__(positive_spikes(spk_rec), targets)


class mse_temporal_loss(_loss.mse_temporal_loss):
    """snnTorch's ``mse_temporal_loss`` on the first positive spike:
    ``MSE(t_first / T, t_target / T)``, ``t_first`` as in :func:`accuracy_temporal`.

    Shape: spk_rec ``[T, B, N]``, targets ``[B]`` (or spike times if ``target_is_time``).
    """

    def __call__(self, spk_rec, targets):
        return super().__call__(positive_spikes(spk_rec), targets)


class l1_rate_sparsity(_reg.l1_rate_sparsity):
    """L1 penalty on every spike, of either sign: ``Lambda * sum |spk|``."""

    def __call__(self, spk_out):
        return self.Lambda * spk_out.abs().sum()
