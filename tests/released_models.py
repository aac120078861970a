"""The paper's released networks, transcribed for tests: github.com/yfguo91/Ternary-Spike (HEAD 2aca587).

models/spike_layer.py (``mem_update``, ``LIFAct``, ``SpikeConv``, ``SpikePool``, ``myBatchNorm3d``),
models/spike_block.py (``SpikeBasicBlock``), models/spike_model.py (``SpikeModel``), models/resnet.py
(``BasicBlock``, ``ResNet_Cifar``, ``ResNet``, ``ResNet_Cifar_Modified``) and models/vggcifar.py
(``VGG``, ``make_layers``), with the code paths the released scripts run (``set_spike_state(True)``,
``is_adain=False``, ``is_drop=False``, ``rp=False``) and nothing else: debugging prints, the
IPython import and unused branches are left out. Names and the order of operations are the
released ones; module globals ``BN`` / ``ReLU`` are written out as ``nn.BatchNorm2d`` / ``nn.ReLU``.
Not library code: tests compare ``tspike_lab.models`` with it.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

# --------------------------------------------------------------------------- models/spike_layer.py


class SpikeModule(nn.Module):
    def __init__(self):
        super().__init__()
        self._spiking = False

    def set_spike_state(self, use_spike=True):
        self._spiking = use_spike

    def forward(self, x):
        if self._spiking is not True and len(x.shape) == 5:
            x = x.mean([0])
        return x


def spike_activation(x, binary=False, temp=1.0):
    if binary:
        out_s = torch.gt(x, 0.5)
        out_bp = torch.clamp(x, 0, 1)
        return (out_s.to(x.dtype) - out_bp).detach() + out_bp
    out_s = torch.sign(x)
    out_s[torch.abs(x) < 0.5] = torch.tensor(0.0)
    out_bp = torch.clamp(x, -1, 1)
    return (out_s.to(x.dtype) - out_bp).detach() + out_bp


def mem_update(x_in, mem, V_th, decay, fire_ratio, grad_scale=1.0, temp=1.0):
    mem = mem * decay + x_in
    spike = spike_activation(mem / V_th, temp=temp)
    mem = mem * (1 - torch.abs(spike))
    spike = spike * fire_ratio
    return mem, spike


class LIFAct(SpikeModule):
    def __init__(self, step):
        super().__init__()
        self.step = step
        self.V_th = 1.0
        self.temp = 3.0
        self.grad_scale = 0.1
        self.fire_ratio = 1

    def forward(self, x):
        u = torch.zeros_like(x[0])
        out = []
        for i in range(self.step):
            u, out_i = mem_update(
                x_in=x[i],
                mem=u,
                V_th=self.V_th,
                fire_ratio=self.fire_ratio,
                grad_scale=self.grad_scale,
                decay=0.25,
                temp=self.temp,
            )
            out += [out_i]
        return torch.stack(out)


class SpikeConv(SpikeModule):
    """Runs its module once per time step (the released wrapper of BatchNorm2d and Linear)."""

    def __init__(self, conv, step=2):
        super().__init__()
        self.conv = conv
        self.step = step

    def forward(self, x):
        out = []
        for i in range(self.step):
            out += [self.conv(x[i])]
        return torch.stack(out)


class SpikePool(SpikeModule):
    """Runs its module on the time-folded batch (the released wrapper of Conv2d and pooling)."""

    def __init__(self, pool, step=2):
        super().__init__()
        self.pool = pool
        self.step = step

    def forward(self, x):
        T, B, C, H, W = x.shape
        out = x.reshape(-1, C, H, W)
        out = self.pool(out)
        B_o, C_o, H_o, W_o = out.shape
        return out.view(T, B, C_o, H_o, W_o).contiguous()


class myBatchNorm3d(SpikeModule):  # noqa: N801 - the released name
    """A fresh BatchNorm3d over (B, C, T, H, W): the BN it wraps is only read for its width."""

    def __init__(self, BN: nn.BatchNorm2d, step=2):  # noqa: N803
        super().__init__()
        self.bn = nn.BatchNorm3d(BN.num_features)
        self.step = step

    def forward(self, x):
        out = x.permute(1, 2, 0, 3, 4)
        out = self.bn(out)
        return out.permute(2, 0, 1, 3, 4).contiguous()


# --------------------------------------------------------------------------- models/resnet.py


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride
        self.relu2 = nn.ReLU(inplace=True)


def _init_resnet(model):
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            n = m.weight.size(1)
            m.weight.data.normal_(0, 1.0 / float(n))
            m.bias.data.zero_()


class _ResNetBase(nn.Module):
    def _make_layer(self, block, planes, blocks, stride=1, avgdown=False):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            if avgdown:
                downsample = nn.Sequential(
                    nn.AvgPool2d(stride, stride=stride, ceil_mode=True, count_include_pad=False),
                    nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=1, bias=False),
                    nn.BatchNorm2d(planes * block.expansion),
                )
            else:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes * block.expansion),
                )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def _head(self, x):
        x = x.view(x.size(0), x.size(1), -1)  # [T, B, C]
        return self.fc(x)


class ResNet_Cifar(_ResNetBase):  # noqa: N801 - the released name
    def __init__(self, block, layers, input_c=3, num_classes=10):
        super().__init__()
        self.inplanes = 128
        self.conv1 = nn.Conv2d(input_c, 128, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(128)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 128, layers[0])
        self.layer2 = self._make_layer(block, 256, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 512, layers[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        _init_resnet(self)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        temp, x = self.layer1((x, x))
        temp, x = self.layer2((temp, x))
        temp, x = self.layer3((temp, x))
        return self._head(self.avgpool(x))


class ResNet(_ResNetBase):
    def __init__(self, block, layers, input_c=3, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(input_c, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool1 = nn.AvgPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool2 = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        _init_resnet(self)

    def forward(self, x):
        x = self.avgpool1(self.relu(self.bn1(self.conv1(x))))
        temp, x = self.layer1((x, x))
        temp, x = self.layer2((temp, x))
        temp, x = self.layer3((temp, x))
        temp, x = self.layer4((temp, x))
        return self._head(self.avgpool2(x))


class ResNet_Cifar_Modified(_ResNetBase):  # noqa: N801 - the released name
    def __init__(self, block, layers, num_classes=10, input_c=3):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Sequential(
            nn.Conv2d(input_c, 64, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AvgPool2d(2)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1, avgdown=True)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, avgdown=True)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, avgdown=True)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, avgdown=True)
        self.avgpool2 = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        _init_resnet(self)
        for m in self.modules():  # zero_init_residual (undone by the spiking conversion's fresh BN3d)
            if isinstance(m, BasicBlock):
                nn.init.constant_(m.bn2.weight, 0)

    def forward(self, x):
        x = self.avgpool(self.conv1(x))
        temp, x = self.layer1((x, x))
        temp, x = self.layer2((temp, x))
        temp, x = self.layer3((temp, x))
        temp, x = self.layer4((temp, x))
        return self._head(self.avgpool2(x))


def resnet19_cifar(**kw):
    return ResNet_Cifar(BasicBlock, [3, 3, 2], **kw)


def resnet20_cifar(**kw):
    return ResNet_Cifar(BasicBlock, [3, 3, 3], **kw)


def resnet20_cifar_modified(**kw):
    return ResNet_Cifar_Modified(BasicBlock, [2, 2, 2, 2], **kw)


def ResNet18(**kw):  # noqa: N802 - the released name
    return ResNet(BasicBlock, [2, 2, 2, 2], **kw)


# --------------------------------------------------------------------------- models/vggcifar.py

CFG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self, features, num_classes=10):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        x = x.view(x.size(0), x.size(1), -1)
        return self.classifier(x)


def vgg16_bn(num_classes=10):
    layers, in_channels = [], 3
    for v in CFG_D:
        if v == "M":
            layers += [nn.AvgPool2d(kernel_size=2, stride=2)]
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            in_channels = v
    return VGG(nn.Sequential(*layers), num_classes=num_classes)


# --------------------------------------------------------------------------- spike_block.py, spike_model.py


class SpikeBasicBlock(SpikeModule):
    def __init__(self, basic_block: BasicBlock, step=2):
        super().__init__()
        self.step = step
        self.conv1 = SpikePool(basic_block.conv1, step=step)
        self.bn1 = myBatchNorm3d(basic_block.bn1, step=step)
        self.relu1 = LIFAct(step)
        self.conv2 = SpikePool(basic_block.conv2, step=step)
        self.bn2 = myBatchNorm3d(basic_block.bn2, step=step)
        if basic_block.downsample is None:
            self.downsample = None
        elif len(basic_block.downsample) == 3:
            self.downsample = nn.Sequential(
                SpikePool(basic_block.downsample[0], step=step),
                SpikePool(basic_block.downsample[1], step=step),
                myBatchNorm3d(basic_block.downsample[2], step=step),
            )
        else:
            self.downsample = nn.Sequential(
                SpikePool(basic_block.downsample[0], step=step), myBatchNorm3d(basic_block.downsample[1], step=step)
            )
        self.output_act = LIFAct(step)
        self.stride = basic_block.stride

    def forward(self, s):
        temp, x = s
        residual = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        out1 = self.output_act(out)
        return out, out1


class SpikeModel(SpikeModule):
    def __init__(self, model: nn.Module, step=2):
        super().__init__()
        self.model = model
        self.step = step
        self.spike_module_refactor(self.model, step=step)

    def spike_module_refactor(self, module: nn.Module, step=2):
        for name, child_module in module.named_children():
            if type(child_module) is BasicBlock:
                setattr(module, name, SpikeBasicBlock(child_module, step=step))
            elif isinstance(child_module, nn.Sequential):
                self.spike_module_refactor(child_module, step=step)
            elif isinstance(child_module, nn.Conv2d):
                setattr(module, name, SpikePool(child_module, step=step))
            elif isinstance(child_module, nn.Linear):
                setattr(module, name, SpikeConv(child_module, step=step))
            elif isinstance(child_module, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
                setattr(module, name, SpikePool(child_module, step=step))
            elif isinstance(child_module, (nn.ReLU, nn.ReLU6)):
                setattr(module, name, LIFAct(step=step))
            elif isinstance(child_module, nn.BatchNorm2d):
                setattr(module, name, SpikeConv(child_module, step=step))
            else:
                self.spike_module_refactor(child_module, step=step)

    def forward(self, input):
        input = input.repeat(self.step, 1, 1, 1, 1) if len(input.shape) == 4 else input.permute([1, 0, 2, 3, 4])
        out = self.model(input)
        return out.mean([0]) if len(out.shape) == 3 else out


RELEASED = {
    "resnet19": resnet19_cifar,
    "resnet20": resnet20_cifar_modified,
    "resnet20_wide": resnet20_cifar,
    "resnet18": ResNet18,
    "vgg16": vgg16_bn,
}


def released_snn(arch: str, num_classes: int = 10, step: int = 2) -> SpikeModel:
    """The released spiking network of ``arch`` (a tspike_lab ARCHS name), as ``main_train.py`` builds it."""
    return SpikeModel(RELEASED[arch](num_classes=num_classes), step)
