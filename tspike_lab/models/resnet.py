"""Spiking ResNets after the paper's released models/resnet.py.

CIFAR ResNet19 / ResNet20: 3x3 stem with 128 channels, BasicBlock stages at widths
128/256/512 (strides 1/2/2), [3, 3, 2] or [3, 3, 3] blocks, global average pool, one FC.
ImageNet ResNet18 / ResNet34: 7x7 stride-2 stem with 64 channels, AvgPool(3, 2, 1)
instead of max pooling, [2, 2, 2, 2] / [3, 4, 6, 3] blocks at 64-512.
In a block the shortcut is added to the BN output, before the block's output neuron.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .layers import ConvBN, ScaledIdentity, SpikingNet, TimeFold

__all__ = ["BasicBlock", "SpikingResNet"]


class BasicBlock(nn.Module):
    """``lif2(bn2(conv2(lif1(bn1(conv1(x))))) + shortcut(x))`` on ``[T, B, C, H, W]``."""

    def __init__(self, in_planes: int, planes: int, stride: int, neuron):
        super().__init__()
        self.cb1 = ConvBN(in_planes, planes, 3, stride, 1)
        self.lif1 = neuron(planes)
        self.cb2 = ConvBN(planes, planes, 3, 1, 1)
        if stride != 1 or in_planes != planes:
            self.shortcut = ConvBN(in_planes, planes, 1, stride, 0)
        else:
            self.shortcut = ScaledIdentity()
        self.lif2 = neuron(planes)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        out = self.lif1(self.cb1(x_seq))
        out = self.cb2(out) + self.shortcut(x_seq)  # residual into the pre-activation
        return self.lif2(out)


class SpikingResNet(SpikingNet):
    """Spiking ResNet of BasicBlocks; ``imagenet_stem`` selects the 7x7 stem + avg pool."""

    def __init__(
        self,
        blocks,
        widths,
        strides,
        *,
        neuron,
        num_classes: int,
        num_steps: int,
        in_channels: int = 3,
        stem_width: int | None = None,
        imagenet_stem: bool = False,
    ):
        super().__init__()
        self.num_steps = num_steps
        self.in_channels = in_channels
        stem_width = stem_width or widths[0]
        if imagenet_stem:
            self.stem = ConvBN(in_channels, stem_width, 7, 2, 3)
            self.pool = TimeFold(nn.AvgPool2d(3, 2, 1))
        else:
            self.stem = ConvBN(in_channels, stem_width, 3, 1, 1)
            self.pool = nn.Identity()
        self.stem_lif = neuron(stem_width)
        layers, in_planes = [], stem_width
        for n, width, stride in zip(blocks, widths, strides):
            for i in range(n):
                layers.append(BasicBlock(in_planes, width, stride if i == 0 else 1, neuron))
                in_planes = width
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_planes, num_classes)

    def features(self, spk_seq: torch.Tensor) -> torch.Tensor:
        return self.layers(self.pool(spk_seq))

    def fold_plan(self):
        plan, prev = [], self.stem_lif
        for block in self.layers:
            plan.append((prev, [block.cb1, block.shortcut]))
            plan.append((block.lif1, [block.cb2]))
            prev = block.lif2
        plan.append((prev, [self.classifier]))
        return plan


def resnet19(**kw):
    return SpikingResNet([3, 3, 2], [128, 256, 512], [1, 2, 2], **kw)


def resnet20(**kw):
    return SpikingResNet([3, 3, 3], [128, 256, 512], [1, 2, 2], **kw)


def resnet18(**kw):
    return SpikingResNet([2, 2, 2, 2], [64, 128, 256, 512], [1, 2, 2, 2], imagenet_stem=True, **kw)


def resnet34(**kw):
    return SpikingResNet([3, 4, 6, 3], [64, 128, 256, 512], [1, 2, 2, 2], imagenet_stem=True, **kw)


def small(*, width: int = 16, **kw):
    """A small ResNet (stem, one block at ``width``, one at ``2*width`` stride 2) for CPUs."""
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    return SpikingResNet([1, 1], [width, 2 * width], [1, 2], **kw)
