"""The paper's networks and a registry: ``build_model(arch, neuron=..., ...)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

from torch import nn

from ..errors import ConfigError
from ..neurons import SpikingLayer
from . import resnet, vgg
from .init import INITS, released_init
from .layers import AMPLITUDES, NEURONS, ConvBN, NeuronKind, ScaledIdentity, SpikingNet

__all__ = [
    "ARCHS",
    "ArchSpec",
    "NEURONS",
    "NeuronKind",
    "INITS",
    "build_model",
    "released_init",
    "spiking_layers",
    "SpikingNet",
    "ConvBN",
    "ScaledIdentity",
]


@dataclass(frozen=True)
class ArchSpec:
    """A network of the registry: its builder, and the smallest image side it can take."""

    name: str
    build: Callable[..., SpikingNet]
    min_size: int = 1  # pooling and strides must leave at least one pixel
    label: str = ""

    def __call__(self, **kwargs) -> SpikingNet:
        return self.build(**kwargs)


ARCHS = MappingProxyType(
    {
        a.name: a
        for a in (
            ArchSpec("resnet19", resnet.resnet19, 1, "ResNet19"),
            ArchSpec("resnet20", resnet.resnet20, 2, "ResNet20"),  # AvgPool2d(2) after the stem
            ArchSpec("resnet20_wide", resnet.resnet20_wide, 1, "ResNet20 (wide, released resnet20_cifar)"),
            ArchSpec("vgg16", vgg.vgg16, 32, "VGG16"),  # five AvgPool2d(2)
            ArchSpec("resnet18", resnet.resnet18, 1, "ResNet18"),
            ArchSpec("resnet34", resnet.resnet34, 1, "ResNet34"),
            ArchSpec("small", resnet.small, 1, "small"),
        )
    }
)

_LIF_KWARGS = ("beta", "threshold", "spike_grad", "reset_mechanism", "detach_reset", "backend", "graded_spikes_factor")


def build_model(
    arch: str,
    *,
    neuron: str,
    num_classes: int,
    num_steps: int,
    in_channels: int = 3,
    amplitude: str = "layer",
    step_bn: bool = False,
    init: str = "torch",
    **kwargs,
) -> SpikingNet:
    """Build a spiking network.

    Args:
        arch: one of ``ARCHS`` (resnet19, resnet20, resnet20_wide, vgg16, resnet18, resnet34, small);
            ``resnet20`` is the released ``resnet20_cifar_modified`` (see :mod:`tspike_lab.models.resnet`).
        neuron: one of ``NEURONS`` (binary, ternary, trainable_binary, trainable_ternary).
        num_classes, num_steps (T), in_channels: as named.
        amplitude: "layer" (one a per layer, the paper) or "channel" (one a per channel).
        step_bn: the BatchNorms outside residual blocks (stems, every VGG BN) normalise each time
            step over its B samples in training, as the released ``SpikeConv``; False (ours): over
            T*B. The same function in eval mode (:mod:`tspike_lab.models.layers`).
        init: "torch" (PyTorch's default initialisation) or "released" (the released code's,
            :func:`tspike_lab.models.init.released_init`).
        kwargs: neuron options (beta, threshold, spike_grad, reset_mechanism, detach_reset,
            backend, graded_spikes_factor) and arch options (``width`` for "small").
    Returns:
        A model mapping ``[B, C, H, W]`` or ``[T, B, C, H, W]`` to logits ``[B, K]``.
    """
    bad = ConfigError.bad  # "{field} must be {allowed}, got {value!r}", the parts kept for front ends
    if arch not in ARCHS:
        raise bad("", "arch", arch, f"one of {sorted(ARCHS)}")
    if neuron not in NEURONS:
        raise bad("", "neuron", neuron, f"one of {list(NEURONS)}")
    if amplitude not in AMPLITUDES:
        raise bad("", "amplitude", amplitude, f"one of {AMPLITUDES}")
    if init not in INITS:
        raise bad("", "init", init, f"one of {INITS}")
    if not isinstance(step_bn, bool):
        raise bad("", "step_bn", step_bn, "True or False")
    for name, value, low in (
        ("num_classes", num_classes, 2),
        ("num_steps", num_steps, 1),
        ("in_channels", in_channels, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise bad("", name, value, f"an int >= {low}")
    lif_kwargs = {k: kwargs.pop(k) for k in _LIF_KWARGS if k in kwargs}
    if kwargs and arch != "small":
        raise ConfigError(
            f"unknown options for arch {arch!r}: {sorted(kwargs)}",
            field=sorted(kwargs)[0],
            value=kwargs[sorted(kwargs)[0]],
            allowed=f"no such option for arch {arch!r}",
        )
    if set(kwargs) - {"width"}:
        unknown = sorted(set(kwargs) - {"width"})
        raise ConfigError(
            f"unknown options for arch 'small': {unknown}; allowed: ['width']",
            field=unknown[0],
            value=kwargs[unknown[0]],
            allowed="no such option for arch 'small' (it takes width)",
        )
    factory = partial(NEURONS[neuron], amplitude=amplitude, **lif_kwargs)
    model = ARCHS[arch](
        neuron=factory, num_classes=num_classes, num_steps=num_steps, in_channels=in_channels, step_bn=step_bn, **kwargs
    )
    if init == "released":
        released_init(model)
    model.arch, model.neuron = arch, neuron
    return model


def spiking_layers(model: nn.Module) -> list[tuple[str, SpikingLayer]]:
    """``[(name, module)]`` of every spiking layer, in forward order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SpikingLayer)]
