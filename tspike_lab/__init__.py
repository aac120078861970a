"""tspike_lab: ternary-spike SNNs (Guo et al., AAAI 2024), snnTorch-compatible."""
from .neurons import TernaryLeaky, BinaryLeaky, MultiStepLIF, SpikingLayer, reset
from . import surrogate, functional

__version__ = "0.1.0"
from .models import ARCHS, NEURONS, build_model, spiking_layers
from .reparam import reparameterize
from . import info, probes, energy
from .probes import Recorder, record, firing_rates, amplitudes, membrane_histograms
from .energy import count_ops, ann_equivalent, energy_pj
from .info import capacity_bits, entropy_bits, map_entropy_bits, quantization_error, best_amplitude
from . import results

_LAZY = {"TrainConfig": "train", "History": "train", "TrainingDiverged": "train", "train": "train",
         "validate": "train", "evaluate": "train"}


def __getattr__(name):
    # The training engine loads on first use, so `python -m tspike_lab.train` (torchrun's
    # entry) does not find the module already imported.
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return module if name == "train" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
