"""How far our folded BatchNorm is from the released per-step one: :func:`step_bn_effect`.

The released code normalises the BatchNorms outside its residual blocks once per time step
(``SpikeConv``); ``build_model(step_bn=False)`` normalises them over T*B. In eval mode the two are
the same function of the running statistics; in training they differ wherever those BNs read
inputs that change over time (spikes: ResNet20's second and third stem convolutions, every VGG
BN after the first). This measures the difference at initialisation, on given images.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import probes
from ..models import build_model

__all__ = ["step_bn_effect"]


@torch.no_grad()
def step_bn_effect(x: torch.Tensor, arch: str, num_steps: int, *, seed: int = 0) -> dict[str, Any]:
    """Train-mode outputs of one freshly initialised network with per-step and with folded BatchNorm.

    Both networks carry the same weights (the released initialisation, seeded), a ternary neuron
    and see the same images ``x`` ``[B, C, H, W]``.

    Returns:
        ``{"arch", "num_steps", "images", "max_logit_diff", "logit_std", "spikes", "spikes_differing"}``:
        the largest |logit difference|, the per-step network's logit std (for scale), the
        neuron-steps recorded and the share whose spike differs.
    """
    nets = []
    for step_bn in (True, False):
        torch.manual_seed(seed)
        nets.append(
            build_model(
                arch,
                neuron="ternary",
                num_classes=10,
                num_steps=num_steps,
                in_channels=x.shape[1],
                step_bn=step_bn,
                init="released",
            ).train()
        )
    nets[1].load_state_dict(nets[0].state_dict())
    recs, logits = [], []
    for net in nets:  # one forward each: train-mode BatchNorm updates its running statistics per pass
        with torch.no_grad(), probes.Recorder(net) as rec:
            logits.append(net(x))
        recs.append(rec.recording)
    spikes = sum(r["spikes"].numel() for r in recs[0].values())
    differ = sum(int((recs[0][k]["spikes"] != recs[1][k]["spikes"]).sum()) for k in recs[0])
    return {
        "arch": arch,
        "num_steps": num_steps,
        "images": int(x.shape[0]),
        "max_logit_diff": float((logits[0] - logits[1]).abs().max()),
        "logit_std": float(logits[0].std()),
        "spikes": spikes,
        "spikes_differing": differ / spikes,
    }
