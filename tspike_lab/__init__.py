"""tspike_lab: ternary-spike SNNs (Guo et al., AAAI 2024), snnTorch-compatible."""
from .neurons import TernaryLeaky, BinaryLeaky, MultiStepLIF, SpikingLayer, reset
from . import surrogate, functional

__version__ = "0.1.0"
from .models import ARCHS, NEURONS, build_model, spiking_layers
from .reparam import reparameterize
