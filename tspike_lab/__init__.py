"""tspike_lab: ternary-spike SNNs (Guo et al., AAAI 2024), snnTorch-compatible."""

from importlib.metadata import PackageNotFoundError, version

from . import energy, errors, functional, info, probes, results, snn_functional, surrogate
from .config import TrainConfig
from .energy import ann_equivalent, count_ops, energy_pj
from .errors import TrainingDiverged
from .info import best_amplitude, capacity_bits, entropy_bits, map_entropy_bits, quantization_error
from .models import ARCHS, NEURONS, build_model, spiking_layers
from .neurons import BinaryLeaky, MultiStepLIF, SpikingLayer, TernaryLeaky, reset
from .probes import Recorder, amplitudes, firing_rates, membrane_histograms, record
from .reparam import reparameterize
from .train import History, evaluate
from .train import train as fit  # tspike_lab.fit(config) trains; tspike_lab.train stays the module

__all__ = [
    "TernaryLeaky",
    "BinaryLeaky",
    "MultiStepLIF",
    "SpikingLayer",
    "reset",
    "surrogate",
    "functional",
    "snn_functional",
    "info",
    "probes",
    "energy",
    "errors",
    "results",
    "ARCHS",
    "NEURONS",
    "build_model",
    "spiking_layers",
    "reparameterize",
    "Recorder",
    "record",
    "firing_rates",
    "amplitudes",
    "membrane_histograms",
    "count_ops",
    "ann_equivalent",
    "energy_pj",
    "capacity_bits",
    "entropy_bits",
    "map_entropy_bits",
    "quantization_error",
    "best_amplitude",
    "TrainConfig",
    "TrainingDiverged",
    "History",
    "evaluate",
    "fit",
    "__version__",
]

try:
    __version__ = version("tspike_lab")  # pyproject.toml's, as installed
except PackageNotFoundError:  # a checkout on sys.path that was never installed
    __version__ = "0+unknown"
