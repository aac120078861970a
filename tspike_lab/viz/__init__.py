"""Plotly figures for the notebooks: every ``plot_*`` returns a ``go.Figure``, never shows it.

Each ``plot_*`` also runs with no arguments (on a synthetic membrane, a shaped input current
or an untrained ``small`` network): tests exercise those defaults; the notebooks always pass
their own data. Computation is delegated to the library (:mod:`.functional`, :mod:`.info`,
:mod:`.probes`, :mod:`.energy`, :mod:`.reparam`); what lives here is layout, plus two
generators of demo inputs (:func:`synthetic_membrane`, :func:`input_current`).

Modules: ``style`` (colours, layout), ``inputs`` (demo inputs), ``information`` (notebooks 01-02),
``raster`` (signed spike rasters, 02-03), ``training`` (03-04), ``results`` (05, and the reproduction:
:func:`plot_table`, :func:`plot_figure2`).

Colours: :data:`COLORS`, one per meaning across the whole series (figures, widgets, notebooks).
"""

from __future__ import annotations

from .information import plot_capacity, plot_neuron, plot_quantization, plot_reset, plot_surrogates, plot_teaser
from .inputs import _demo_model, _demo_recording, input_current, synthetic_membrane  # noqa: F401 (tests, widgets)
from .raster import plot_raster, population_current
from .results import plot_energy, plot_figure2, plot_logits_match, plot_spike_values, plot_table
from .style import _PALETTE, COLORS, CURRENTS, DISTRIBUTIONS, MEMBRANE_COLORSCALE  # noqa: F401
from .training import (  # noqa: F401
    _epochs,
    plot_amplitudes,
    plot_bn_invariance,
    plot_firing_rates,
    plot_membrane_depth,
    plot_membrane_histogram,
    plot_training,
)

__all__ = [
    "COLORS",
    "MEMBRANE_COLORSCALE",
    "DISTRIBUTIONS",
    "CURRENTS",
    "synthetic_membrane",
    "input_current",
    "population_current",
    "plot_capacity",
    "plot_quantization",
    "plot_teaser",
    "plot_neuron",
    "plot_reset",
    "plot_surrogates",
    "plot_raster",
    "plot_training",
    "plot_firing_rates",
    "plot_amplitudes",
    "plot_membrane_histogram",
    "plot_membrane_depth",
    "plot_bn_invariance",
    "plot_logits_match",
    "plot_spike_values",
    "plot_energy",
    "plot_table",
    "plot_figure2",
]
