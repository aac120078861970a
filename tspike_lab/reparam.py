"""Re-parameterization (paper Eq. 15-17): fold trained amplitudes into weights.

    G = K * (a B) = (a K) * B

A spiking layer emitting ``a * b`` with ``b`` in {-1, 0, 1} feeds convolutions, a
downsampling shortcut (1x1 conv) or the classifier: each consumer's weight is scaled by
``a`` along its input channels and the layer then emits plain ``b``. BatchNorm after a
convolution is unaffected (it sees the same pre-activation). An identity shortcut that
carried ``a * b`` becomes ``scale * b`` with ``scale = a``: it adds +a, -a or nothing,
which is still an addition, not a multiplication, so inference stays addition-only.
Average pooling between a neuron and its consumer is linear and commutes with the scale.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .models import spiking_layers
from .models.layers import ConvBN, ScaledIdentity, SpikingNet

__all__ = ["reparameterize", "fold_bn_into_conv", "consumer_kinds"]


def _scale_input(consumer: nn.Module, a: torch.Tensor) -> None:
    if isinstance(consumer, ConvBN):
        w = consumer.conv.weight  # [C_out, C_in, k, k]
        w.mul_(a.reshape(1, -1, 1, 1) if a.dim() else a)
    elif isinstance(consumer, nn.Linear):
        consumer.weight.mul_(a.reshape(1, -1) if a.dim() else a)  # [K, C_in]
    elif isinstance(consumer, ScaledIdentity):
        scale = a.reshape(-1, 1, 1) if a.dim() else a.clone()
        consumer.scale = scale if consumer.scale is None else consumer.scale * scale
    else:
        raise TypeError(f"cannot fold an amplitude into {type(consumer).__name__}")


def consumer_kinds(model: SpikingNet) -> dict[str, list[str]]:
    """For every spiking layer, what reads its output (``model.fold_plan()``), as labels.

    "BatchNorm" (a convolution followed by BatchNorm: a positive scale of its input is
    normalized away in training mode), "residual" (an identity shortcut adds it to a
    pre-activation), "classifier" (the final linear layer reads its pooled output), or the
    consumer's class name. Which of them a layer feeds decides whether its amplitude a can
    learn (notebooks 03-04) and where :func:`reparameterize` folds it.

    Returns:
        ``{layer name: [label, ...]}`` in forward order.
    """
    if not hasattr(model, "fold_plan"):
        raise ValueError(f"model must be a tspike_lab network with fold_plan(), got {type(model).__name__}")
    names = {id(m): n for n, m in spiking_layers(model)}
    out: dict[str, list[str]] = {}
    for lif, consumers in model.fold_plan():
        labels = []
        for c in consumers:
            if isinstance(c, ConvBN):
                labels.append("BatchNorm" if isinstance(c.bn, nn.modules.batchnorm._BatchNorm) else "conv")
            elif isinstance(c, ScaledIdentity):
                labels.append("residual")
            elif isinstance(c, nn.Linear) and c is getattr(model, "classifier", None):
                labels.append("classifier")
            else:
                labels.append(type(c).__name__)
        out[names[id(lif)]] = labels
    return out


@torch.no_grad()
def fold_bn_into_conv(cb: ConvBN) -> None:
    """Fold eval-mode BatchNorm into the convolution before it: ``bn(conv(x)) == conv'(x)``."""
    bn, conv = cb.bn, cb.conv
    if not isinstance(bn, nn.BatchNorm2d):
        return
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    scale = gamma / std
    bias = conv.bias if conv.bias is not None else torch.zeros_like(std)
    new = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    )
    new = new.to(conv.weight.device, conv.weight.dtype)
    new.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    new.bias.copy_((bias - bn.running_mean) * scale + beta)
    cb.conv, cb.bn = new, nn.Identity()


@torch.no_grad()
def reparameterize(model: SpikingNet, *, fold_bn: bool = False) -> SpikingNet:
    """Return a NEW model whose spiking layers emit exactly {-1, 0, 1} (or {0, 1}).

    Every amplitude ``a`` (per layer or per channel) is folded into the weights of the
    layers that consume it (``model.fold_plan()``); the input model is untouched. With
    ``fold_bn=True`` eval-mode BatchNorm is folded into the preceding convolution too.
    In eval mode the logits are unchanged up to float rounding.
    """
    if not hasattr(model, "fold_plan"):
        raise ValueError(f"model must be a tspike_lab network with fold_plan(), got {type(model).__name__}")
    new = copy.deepcopy(model)
    for lif, consumers in new.fold_plan():
        a = lif.graded_spikes_factor.detach().clone()
        for consumer in consumers:
            _scale_input(consumer, a)
        del lif.graded_spikes_factor
        lif.register_buffer("graded_spikes_factor", torch.ones_like(a))
    if fold_bn:
        for m in new.modules():
            if isinstance(m, ConvBN):
                fold_bn_into_conv(m)
    new.reparameterized = True
    return new


@torch.no_grad()
def compare(model: nn.Module, folded: nn.Module, x: torch.Tensor) -> dict:
    """Compare a model with its folded copy on ``x`` in eval mode.

    Returns ``{"max_logit_diff", "spikes", "flipped"}``: ``flipped`` counts spikes of the
    folded model that differ from the original's ``b`` (its output divided by ``a``).
    In float64 nothing flips. In float32 the folded weights ``fl(a*K)`` round differently
    from ``K * (a*B)`` (fused multiply-add keeps the product exact), a membrane moves by
    ~1e-6, and a neuron within that distance of its threshold can fire differently.
    """
    pairs = list(zip(spiking_layers(model), spiking_layers(folded)))
    outs: dict[str, list] = {"o": [], "f": []}
    hooks = []
    for (_, a_layer), (_, f_layer) in pairs:
        hooks.append(a_layer.register_forward_hook(lambda m, i, o: outs["o"].append(o / m.amplitude(o.dim()))))
        hooks.append(f_layer.register_forward_hook(lambda m, i, o: outs["f"].append(o)))
    was = model.training, folded.training
    model.eval(), folded.eval()
    try:
        diff = (model(x) - folded(x)).abs().max().item()
    finally:
        for h in hooks:
            h.remove()
        model.train(was[0]), folded.train(was[1])
    flipped = sum(int((o != f).sum()) for o, f in zip(outs["o"], outs["f"]))
    spikes = sum(o.numel() for o in outs["o"])
    return {"max_logit_diff": diff, "spikes": spikes, "flipped": flipped}
