"""ResNets built the way the paper's released code builds it, as the training-step baseline.

Same layer shapes as ``tspike_lab.build_model("resnet19", ...)`` (3x3 stem with 128
channels, BasicBlocks [3, 3, 2] at 128/256/512, strides 1/2/2, 1x1 conv + BN
downsampling, global average pool, one FC), with the released code's way of running
them on ``[T, B, ...]``:

``layout="released"`` follows models/spike_model.py and spike_block.py: the static image
is repeated T times; convolutions and pooling fold time into batch (``SpikePool``); the
stem BatchNorm and the FC run once per step in a Python loop (``SpikeConv``); the
blocks' BatchNorms are BatchNorm3d over ``x.permute(1, 2, 0, 3, 4)`` and copied back
(``myBatchNorm3d``); the residual is added in place; every neuron is :class:`LIFAct`.

``layout="per_step"`` is the tdLayer style of many SNN codebases: every convolution,
BatchNorm, pooling and FC runs once per step in a Python loop and the outputs are
stacked.
"""

from __future__ import annotations

import torch
from lifact import LIFAct  # benchmarks/ is on sys.path: the scripts run from there
from torch import nn

__all__ = ["ReferenceResNet", "reference_resnet19", "reference_small", "LAYOUTS"]

LAYOUTS = ("released", "per_step")


class Fold(nn.Module):
    """Stateless layer on ``[T, B, ...]`` with time folded into batch."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        T, B = x.shape[:2]
        y = self.module(x.reshape(T * B, *x.shape[2:]))
        return y.view(T, B, *y.shape[1:]).contiguous()


class PerStep(nn.Module):
    """Layer applied to each step in a Python loop, outputs stacked."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return torch.stack([self.module(x[t]) for t in range(x.shape[0])])


class BN3d(nn.Module):
    """BatchNorm over (B, T, H, W) per channel via a permuted copy, as ``myBatchNorm3d``."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm3d(channels)

    def forward(self, x):
        out = self.bn(x.permute(1, 2, 0, 3, 4))  # [T, B, C, H, W] -> [B, C, T, H, W]
        return out.permute(2, 0, 1, 3, 4).contiguous()


def _conv(layout, cin, cout, k, stride):
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
    return Fold(conv) if layout == "released" else PerStep(conv)


def _bn(layout, c):
    return BN3d(c) if layout == "released" else PerStep(nn.BatchNorm2d(c))


class Block(nn.Module):
    def __init__(self, layout, cin, cout, stride, step):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = _conv(layout, cin, cout, 3, stride), _bn(layout, cout), LIFAct(step)
        self.conv2, self.bn2 = _conv(layout, cout, cout, 3, 1), _bn(layout, cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(_conv(layout, cin, cout, 1, stride), _bn(layout, cout))
        self.output_act = LIFAct(step)

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        out += residual
        return self.output_act(out)


class ReferenceResNet(nn.Module):
    """CIFAR ResNet on ``[B, 3, H, W]`` -> logits ``[B, K]`` averaged over ``step`` steps."""

    def __init__(self, blocks, widths, strides, *, num_classes: int = 10, step: int = 2, layout: str = "released"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.step = step
        self.conv1 = _conv(layout, 3, widths[0], 3, 1)
        self.bn1 = PerStep(nn.BatchNorm2d(widths[0]))  # both layouts: the released stem BN is per step
        self.relu = LIFAct(step)
        layers, cin = [], widths[0]
        for n, width, stride in zip(blocks, widths, strides):
            for i in range(n):
                layers.append(Block(layout, cin, width, stride if i == 0 else 1, step))
                cin = width
        self.layers = nn.Sequential(*layers)
        pool = nn.AdaptiveAvgPool2d(1)
        self.avgpool = Fold(pool) if layout == "released" else PerStep(pool)
        self.fc = PerStep(nn.Linear(cin, num_classes))

    def forward(self, x):
        x = x.repeat(self.step, 1, 1, 1, 1)  # [B, 3, H, W] -> [T, B, 3, H, W]
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.avgpool(self.layers(x))
        x = x.view(x.size(0), x.size(1), -1)  # [T, B, C]
        return self.fc(x).mean(0)


def reference_resnet19(**kw) -> ReferenceResNet:
    """ResNet19: the shapes of ``build_model("resnet19", ...)``."""
    return ReferenceResNet([3, 3, 2], [128, 256, 512], [1, 2, 2], **kw)


def reference_small(width: int = 16, **kw) -> ReferenceResNet:
    """The shapes of ``build_model("small", width=width, ...)`` (quick end-to-end runs)."""
    return ReferenceResNet([1, 1], [width, 2 * width], [1, 2], **kw)
