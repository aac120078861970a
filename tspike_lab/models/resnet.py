"""Spiking ResNets after the paper's released models/resnet.py.

CIFAR ResNet19 (``resnet19_cifar``): 3x3 stem with 128 channels, BasicBlock stages [3, 3, 2]
at widths 128/256/512 (strides 1/2/2), 1x1 strided conv + BN shortcuts, global average pool,
one FC.

CIFAR ResNet20 (``resnet20``, the released ``resnet20_cifar_modified``): a stem of three 3x3
convs at 64 channels (each conv + BN + neuron), AvgPool2d(2), BasicBlock stages [2, 2, 2, 2]
at 64/128/256/512 (strides 1/2/2/2) with "AvgDown" shortcuts (AvgPool2d(stride) then 1x1
conv + BN). The released ANN constructor zeroes every block's second BN weight
(zero_init_residual), but its spiking conversion (``SpikeBasicBlock``) replaces every block BN by a
fresh ``BatchNorm3d`` (weight 1, bias 0), so the spiking ResNet20 it trains starts at 1, as here.
11.25 M parameters and 0.22 GMAC per step on 32x32 images.

Which network the paper's "ResNet20" is, is not stated. The released code has two; we take
the modified one because (1) the paper's ResNet20 rows lie 1-1.5 points below ResNet19 on
CIFAR-10 and 5-7 below on CIFAR-100, which fits this smaller net (11.25 M parameters,
0.22 GMAC) and not ``resnet20_cifar`` (17.29 M, 2.59 GMAC, strictly larger than ResNet19's
12.57 M, 2.29 GMAC); (2) it is the ResNet20 of Dspike and RecDis-SNN, whose rows Table 2
sets beside it; (3) Table 5's 3.54 M FLOPs are exactly its first conv (3 -> 64, 32x32,
1.77 M MACs) at T=2. The other one stays available as ``resnet20_wide``.

ImageNet ResNet18 / ResNet34: 7x7 stride-2 stem with 64 channels, AvgPool(3, 2, 1)
instead of max pooling, [2, 2, 2, 2] / [3, 4, 6, 3] blocks at 64-512.
In a block the shortcut is added to the BN output, before the block's output neuron.

``step_bn=True`` runs the stem's BatchNorms per time step, as the released ``SpikeConv``
(see :mod:`tspike_lab.models.layers`); the blocks' BNs are always over T*B, as the released
``myBatchNorm3d``. The released weight initialisation is :func:`tspike_lab.models.init.released_init`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .layers import ConvBN, ScaledIdentity, SpikingNet, TimeFold

__all__ = ["BasicBlock", "AvgDown", "SpikingResNet", "SHORTCUTS"]

SHORTCUTS = ("conv", "avgdown")


class AvgDown(nn.Module):
    """The released "AvgDown" shortcut: ``bn(conv1x1(avgpool_stride(x)))`` on ``[T, B, C, H, W]``.

    AvgPool2d(stride, ceil_mode=True, count_include_pad=False), then a 1x1 conv (stride 1) + BN.
    Pooling is linear, so an amplitude folds into ``cb`` as into any convolution.
    """

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.pool = TimeFold(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False))
        self.cb = ConvBN(in_planes, planes, 1, 1, 0)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.cb(self.pool(x_seq))


class BasicBlock(nn.Module):
    """``lif2(bn2(conv2(lif1(bn1(conv1(x))))) + shortcut(x))`` on ``[T, B, C, H, W]``.

    ``shortcut`` for a change of shape: "conv" (1x1 strided conv + BN, ResNet19) or
    "avgdown" (:class:`AvgDown`, ResNet20).
    """

    def __init__(self, in_planes: int, planes: int, stride: int, neuron, shortcut: str = "conv"):
        super().__init__()
        self.cb1 = ConvBN(in_planes, planes, 3, stride, 1)
        self.lif1 = neuron(planes)
        self.cb2 = ConvBN(planes, planes, 3, 1, 1)
        if stride == 1 and in_planes == planes:
            self.shortcut = ScaledIdentity()
        elif shortcut == "avgdown":
            self.shortcut = AvgDown(in_planes, planes, stride)
        else:
            self.shortcut = ConvBN(in_planes, planes, 1, stride, 0)
        self.lif2 = neuron(planes)

    @property
    def shortcut_consumer(self) -> nn.Module:
        """The layer of the shortcut that reads the block's input (where an amplitude folds)."""
        return self.shortcut.cb if isinstance(self.shortcut, AvgDown) else self.shortcut

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
        stem_convs: int = 1,
        stem_pool: int | None = None,
        shortcut: str = "conv",
        step_bn: bool = False,
    ):
        """``stem_convs`` 3x3 convs (each conv + BN + neuron) form a CIFAR stem, followed by
        AvgPool2d(``stem_pool``) if given; ``shortcut`` is one of :data:`SHORTCUTS`;
        ``step_bn``: the stem's BatchNorms normalise each time step (the released ``SpikeConv``)."""
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ConfigError.bad("", "shortcut", shortcut, f"one of {SHORTCUTS}")
        self.num_steps = num_steps
        self.in_channels = in_channels
        stem_width = stem_width or widths[0]
        if imagenet_stem:
            self.stem = ConvBN(in_channels, stem_width, 7, 2, 3, step_bn=step_bn)
            self.pool = TimeFold(nn.AvgPool2d(3, 2, 1))
        else:
            self.stem = ConvBN(in_channels, stem_width, 3, 1, 1, step_bn=step_bn)
            self.pool = TimeFold(nn.AvgPool2d(stem_pool)) if stem_pool else nn.Identity()
        self.stem_lif = neuron(stem_width)
        rest = []  # the stem's further conv + BN + neuron stages, before the pool
        for _ in range(stem_convs - 1):
            rest += [ConvBN(stem_width, stem_width, 3, 1, 1, step_bn=step_bn), neuron(stem_width)]
        self.stem_rest = nn.Sequential(*rest)
        layers, in_planes = [], stem_width
        for n, width, stride in zip(blocks, widths, strides):
            for i in range(n):
                layers.append(BasicBlock(in_planes, width, stride if i == 0 else 1, neuron, shortcut))
                in_planes = width
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_planes, num_classes)

    def features(self, spk_seq: torch.Tensor) -> torch.Tensor:
        return self.layers(self.pool(self.stem_rest(spk_seq)))

    def fold_plan(self):
        plan, prev = [], self.stem_lif
        for conv_bn, lif in zip(self.stem_rest[0::2], self.stem_rest[1::2]):
            plan.append((prev, [conv_bn]))
            prev = lif
        for block in self.layers:
            plan.append((prev, [block.cb1, block.shortcut_consumer]))
            plan.append((block.lif1, [block.cb2]))
            prev = block.lif2
        plan.append((prev, [self.classifier]))
        return plan


def resnet19(**kw):
    return SpikingResNet([3, 3, 2], [128, 256, 512], [1, 2, 2], **kw)


def resnet20(**kw):
    """The released ``resnet20_cifar_modified`` (see the module docstring for why it is "ResNet20")."""
    return SpikingResNet(
        [2, 2, 2, 2], [64, 128, 256, 512], [1, 2, 2, 2], stem_convs=3, stem_pool=2, shortcut="avgdown", **kw
    )


def resnet20_wide(**kw):
    """The released ``resnet20_cifar``: ResNet19's 128-channel stem with [3, 3, 3] blocks at 128/256/512."""
    return SpikingResNet([3, 3, 3], [128, 256, 512], [1, 2, 2], **kw)


def resnet18(**kw):
    return SpikingResNet([2, 2, 2, 2], [64, 128, 256, 512], [1, 2, 2, 2], imagenet_stem=True, **kw)


def resnet34(**kw):
    return SpikingResNet([3, 4, 6, 3], [64, 128, 256, 512], [1, 2, 2, 2], imagenet_stem=True, **kw)


def small(*, width: int = 16, **kw):
    """A small ResNet (stem, one block at ``width``, one at ``2*width`` stride 2) for CPUs."""
    if not isinstance(width, int) or width < 1:
        raise ConfigError.bad("", "width", width, "a positive int")
    return SpikingResNet([1, 1], [width, 2 * width], [1, 2], **kw)
