"""Spiking VGG16 after the paper's released models/vggcifar.py.

cfg D with conv bias, BN and a spiking neuron after every conv, average pooling instead
of max pooling, adaptive average pool to 1x1, one Linear 512 -> classes. The released spiking
conversion runs every one of these BatchNorms per time step (``SpikeConv``): ``step_bn=True``.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBN, SpikingNet, TimeFold

__all__ = ["SpikingVGG", "CFG_D"]

CFG_D = (64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512, "A")


class SpikingVGG(SpikingNet):
    def __init__(
        self, cfg=CFG_D, *, neuron, num_classes: int, num_steps: int, in_channels: int = 3, step_bn: bool = False
    ):
        super().__init__()
        self.num_steps = num_steps
        self.in_channels = in_channels
        widths = [c for c in cfg if c != "A"]
        self.stem = ConvBN(in_channels, widths[0], 3, 1, 1, bias=True, step_bn=step_bn)
        self.stem_lif = neuron(widths[0])
        body, in_ch = [], widths[0]
        for c in cfg[1:]:
            if c == "A":
                body.append(TimeFold(nn.AvgPool2d(2)))
            else:
                body += [ConvBN(in_ch, c, 3, 1, 1, bias=True, step_bn=step_bn), neuron(c)]
                in_ch = c
        self.body = nn.Sequential(*body)
        self.classifier = nn.Linear(in_ch, num_classes)

    def features(self, spk_seq: torch.Tensor) -> torch.Tensor:
        return self.body(spk_seq)

    def fold_plan(self):
        lifs = [self.stem_lif] + [m for m in self.body if not isinstance(m, (ConvBN, TimeFold))]
        convs = [m for m in self.body if isinstance(m, ConvBN)]
        return [(lif, [consumer]) for lif, consumer in zip(lifs, convs + [self.classifier])]


def vgg16(**kw):
    return SpikingVGG(CFG_D, **kw)
