"""tspike_lab: ternary-spike SNNs (Guo et al., AAAI 2024), snnTorch-compatible."""
from importlib.metadata import PackageNotFoundError, version

from .neurons import TernaryLeaky, BinaryLeaky, MultiStepLIF, SpikingLayer, reset
from . import surrogate, functional, snn_functional
from .models import ARCHS, NEURONS, build_model, spiking_layers
from .reparam import reparameterize
from . import info, probes, energy
from .probes import Recorder, record, firing_rates, amplitudes, membrane_histograms
from .energy import count_ops, ann_equivalent, energy_pj
from .info import capacity_bits, entropy_bits, map_entropy_bits, quantization_error, best_amplitude
from . import errors, results
from .config import TrainConfig
from .errors import TrainingDiverged
from .train import History, evaluate
from .train import train as fit  # tspike_lab.fit(config) trains; tspike_lab.train stays the module

try:
    __version__ = version("tspike_lab")  # pyproject.toml's, as installed
except PackageNotFoundError:  # a checkout on sys.path that was never installed
    __version__ = "0+unknown"
