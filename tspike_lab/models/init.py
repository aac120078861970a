"""Weight initialisation: PyTorch's defaults ("torch") or the released code's ("released").

The released ANN constructors (models/resnet.py, models/vggcifar.py of yfguo91/Ternary-Spike)
initialise before the spiking conversion, which keeps the conv and linear weights:

- ResNets (``ResNet_Cifar``, ``ResNet_Cifar_Modified``, ``ResNet``)::

      conv.weight   ~ N(0, std = sqrt(2 / (k_h * k_w * C_out)))     (He, fan-out)
      linear.weight ~ N(0, std = 1 / in_features),   linear.bias = 0
      BN weight = 1, bias = 0

- VGG (``VGG._initialize_weights``)::

      conv.weight ~ kaiming_normal_(mode="fan_out", nonlinearity="relu")  (the same N(0, sqrt(2 / fan_out)))
      conv.bias = 0;  linear.weight ~ N(0, std = 0.01),  linear.bias = 0;  BN weight = 1, bias = 0

The spiking conversion then replaces every BN inside a residual block by a fresh
``BatchNorm3d`` (weight 1, bias 0): every BN starts at weight 1 and bias 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .vgg import SpikingVGG

__all__ = ["INITS", "released_init"]

INITS = ("torch", "released")


@torch.no_grad()
def released_init(model: nn.Module) -> nn.Module:
    """Re-draw ``model``'s conv, linear and BatchNorm parameters as the released code does (in place).

    The linear rule is the VGG one for a :class:`~tspike_lab.models.vgg.SpikingVGG`, the ResNet
    one for every other network. Spike amplitudes a are left at their value. Returns ``model``.
    """
    vgg = isinstance(model, SpikingVGG)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            m.weight.normal_(0.0, math.sqrt(2.0 / (kh * kw * m.out_channels)))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()
        elif isinstance(m, nn.Linear):
            m.weight.normal_(0.0, 0.01 if vgg else 1.0 / m.in_features)
            if m.bias is not None:
                m.bias.zero_()
    return model
