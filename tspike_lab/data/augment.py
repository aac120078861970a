"""Batched, device-side data augmentation: crop, flip, roll, Cutout and AutoAugment (CIFAR10 policy).

Every function takes a batch ``[B, C, H, W]`` and a ``torch.Generator`` on the batch's device
and draws a fixed number of random values per call, so results are reproducible from the
generator's seed. No per-sample Python loops: per-sample parameters become index tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation settings.

    Args:
        crop_padding: random crop after zero padding by this many pixels per side (0: off).
        flip: random horizontal flip with p=0.5.
        autoaugment: AutoAugment CIFAR10Policy (images only).
        cutout: side of one square hole set to 0 (0: off): black pixels, before normalization, as the
            released CIFAR transforms (ToTensor, Cutout, Normalize); zero events for event frames.
        roll: random circular shift of up to this many pixels per axis (DVS-style; 0: off).
    """

    crop_padding: int = 4
    flip: bool = True
    autoaugment: bool = False
    cutout: int = 0
    roll: int = 0

    def __post_init__(self) -> None:
        for name in ("crop_padding", "cutout", "roll"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Augment.{name} must be an int >= 0, got {value!r}")
        for name in ("flip", "autoaugment"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"Augment.{name} must be True or False, got {value!r}")


def _rand(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device)


def _randint(low: int, high: int, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform ints in [low, high)."""
    return torch.randint(low, high, (n,), generator=generator, device=device)


def _gather_hw(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per-sample spatial gather: ``out[b, c, i, j] = x[b, c, rows[b, i], cols[b, j]]``.

    Shape:
        x: ``[B, C, H, W]``; rows: ``[B, H']``; cols: ``[B, W']``; returns ``[B, C, H', W']``.
    """
    b, c, _, w = x.shape
    flat = (rows[:, :, None] * w + cols[:, None, :]).reshape(b, 1, -1)
    out = x.reshape(b, c, -1).gather(2, flat.expand(b, c, flat.shape[2]))
    return out.view(b, c, rows.shape[1], cols.shape[1])


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and cut a random ``H x W`` window per sample.

    Shape:
        x: ``[B, C, H, W]`` (any dtype); returns the same shape and dtype.
    """
    if padding == 0 or x.shape[0] == 0:
        return x
    bsz, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    oy = _randint(0, 2 * padding + 1, bsz, generator, x.device)
    ox = _randint(0, 2 * padding + 1, bsz, generator, x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)
    cols = ox[:, None] + torch.arange(w, device=x.device)
    return _gather_hw(padded, rows, cols)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each sample left-right with probability 0.5 (last axis)."""
    mask = _rand(x.shape[0], generator, x.device) < 0.5
    return torch.where(mask.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def random_roll(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Circularly shift each sample by independent ints in ``[-max_shift, max_shift]`` along H and W."""
    if max_shift == 0 or x.shape[0] == 0:
        return x
    bsz, _, h, w = x.shape
    sy = _randint(-max_shift, max_shift + 1, bsz, generator, x.device)
    sx = _randint(-max_shift, max_shift + 1, bsz, generator, x.device)
    rows = (torch.arange(h, device=x.device)[None, :] - sy[:, None]) % h
    cols = (torch.arange(w, device=x.device)[None, :] - sx[:, None]) % w
    return _gather_hw(x, rows, cols)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Set one ``size x size`` square per sample (center uniform over the image, clipped) to 0."""
    if size == 0 or x.shape[0] == 0:
        return x
    bsz, _, h, w = x.shape
    cy = _randint(0, h, bsz, generator, x.device)
    cx = _randint(0, w, bsz, generator, x.device)
    y0, x0 = cy - size // 2, cx - size // 2
    ar_h = torch.arange(h, device=x.device)[None, :]
    ar_w = torch.arange(w, device=x.device)[None, :]
    in_rows = (ar_h >= y0[:, None]) & (ar_h < y0[:, None] + size)
    in_cols = (ar_w >= x0[:, None]) & (ar_w < x0[:, None] + size)
    hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return x.masked_fill(hole, 0)


# --------------------------------------------------------------------------- AutoAugment ops
# Each op maps uint8 [M, C, H, W] and per-sample float magnitudes [M] to uint8 [M, C, H, W],
# following PIL's definitions as used by the reference CIFAR10Policy implementation.


def _as_uint8(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 255] and truncate like PIL's uint8 conversion of float results."""
    return x.clamp(0, 255).floor().to(torch.uint8)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert("L")`` (ITU-R 601-2, fixed point) as int32 ``[M, 1, H, W]``."""
    if x.shape[1] == 1:
        return x.to(torch.int32)
    r, g, b = x[:, 0:1].to(torch.int32), x[:, 1:2].to(torch.int32), x[:, 2:3].to(torch.int32)
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def _blend(degenerate: torch.Tensor, img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ``Image.blend(degenerate, img, factor)`` with per-sample factors."""
    d = degenerate.to(torch.float32)
    f = factor.to(torch.float32).view(-1, 1, 1, 1)
    return _as_uint8(d + f * (img.to(torch.float32) - d))


def _cubic_rows(v1, v2, v3, v4, d):
    """PIL's bicubic interpolation polynomial (cubic convolution with a = -1)."""
    p2 = v3 - v1
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = v2 - v1 + v4 - v3
    return v2 + d * (p2 + d * (p3 + d * p4))


def _affine(x: torch.Tensor, matrix: torch.Tensor, mode: str, fill: int = 128) -> torch.Tensor:
    """PIL-style affine resampling: ``matrix`` [M, 2, 3] maps output pixel coords to input coords.

    Coordinates are continuous with pixel ``k`` covering ``[k, k + 1)``; an output pixel whose
    source point lies outside the image gets ``fill``. ``mode`` is "nearest" or "bicubic"
    (PIL's kernel and edge clamping), evaluated in float64 like PIL.
    """
    m, c, h, w = x.shape
    dev = x.device
    mat = matrix.to(device=dev, dtype=torch.float64)
    jj = (torch.arange(w, device=dev, dtype=torch.float64) + 0.5).view(1, 1, w)
    ii = (torch.arange(h, device=dev, dtype=torch.float64) + 0.5).view(1, h, 1)
    a, b, cc, d, e, f = (mat[:, r, k].view(m, 1, 1) for r in range(2) for k in range(3))
    u = a * jj + b * ii + cc  # [M, H, W] source x, same evaluation order as PIL's affine_transform
    v = d * jj + e * ii + f  # [M, H, W] source y
    valid = ((u >= 0) & (u < w) & (v >= 0) & (v < h)).unsqueeze(1)
    src = x.to(torch.float64).reshape(m, c, h * w)

    def at(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Values at clamped integer coordinates ``[M, H, W]`` -> ``[M, C, H, W]``."""
        flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).reshape(m, 1, h * w)
        return src.gather(2, flat.expand(m, c, h * w)).view(m, c, h, w)

    if mode == "nearest":
        out = at(torch.floor(v).long(), torch.floor(u).long())
    elif mode == "bicubic":
        us, vs = u - 0.5, v - 0.5
        x0, y0 = torch.floor(us), torch.floor(vs)
        dx, dy = (us - x0).unsqueeze(1), (vs - y0).unsqueeze(1)
        x0, y0 = x0.long() - 1, y0.long() - 1
        rows = []
        for r in range(4):
            taps = [at(y0 + r, x0 + k) for k in range(4)]
            rows.append(_cubic_rows(*taps, dx))
        out = _cubic_rows(*rows, dy).clamp(0, 255).floor()
    else:
        raise ValueError(f"mode must be 'nearest' or 'bicubic', got {mode!r}")
    out = torch.where(valid, out, torch.full_like(out, float(fill)))
    return out.to(torch.uint8)


def _matrix(m: torch.Tensor, a, b, c, d, e, f) -> torch.Tensor:
    """Stack per-sample affine coefficients (scalars or [M] tensors) into [M, 2, 3]."""

    def col(v):
        return v if torch.is_tensor(v) else torch.full_like(m, float(v))

    return torch.stack([torch.stack([col(a), col(b), col(c)], 1), torch.stack([col(d), col(e), col(f)], 1)], 1)


def shear_x(x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """PIL ``AFFINE (1, mag, 0, 0, 1, 0)``, bicubic, gray fill."""
    mag = mag.to(torch.float64)
    return _affine(x, _matrix(mag, 1, mag, 0, 0, 1, 0), "bicubic")


def shear_y(x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """PIL ``AFFINE (1, 0, 0, mag, 1, 0)``, bicubic, gray fill."""
    mag = mag.to(torch.float64)
    return _affine(x, _matrix(mag, 1, 0, 0, mag, 1, 0), "bicubic")


def translate_x(x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """Shift by ``mag * width`` pixels (PIL ``AFFINE (1, 0, mag*W, 0, 1, 0)``), nearest, gray fill."""
    mag = mag.to(torch.float64)
    return _affine(x, _matrix(mag, 1, 0, mag * x.shape[3], 0, 1, 0), "nearest")


def translate_y(x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """Shift by ``mag * height`` pixels (PIL ``AFFINE (1, 0, 0, 0, 1, mag*H)``), nearest, gray fill."""
    mag = mag.to(torch.float64)
    return _affine(x, _matrix(mag, 1, 0, 0, 0, 1, mag * x.shape[2]), "nearest")


def rotate(x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """Rotate counter-clockwise by ``mag`` degrees about the center (PIL ``rotate``), nearest, gray fill."""
    t = -mag.to(torch.float64) * (math.pi / 180.0)
    cos, sin = torch.cos(t), torch.sin(t)
    cx, cy = x.shape[3] / 2.0, x.shape[2] / 2.0
    # PIL: input = R @ (output - center) + center with R = [[cos, sin], [-sin, cos]]
    c = cx - (cos * cx + sin * cy)
    f = cy - (-sin * cx + cos * cy)
    return _affine(x, _matrix(t, cos, sin, c, -sin, cos, f), "nearest")


def color(x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance.Color(img).enhance(1 + mag)`` (saturation; no-op for one channel)."""
    if x.shape[1] == 1:
        return x
    return _blend(_grayscale(x).expand_as(x), x, 1 + mag)


def contrast(x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance.Contrast(img).enhance(1 + mag)``: blend with the mean gray level."""
    mean = _grayscale(x).to(torch.float64).mean(dim=(1, 2, 3))
    level = torch.floor(mean + 0.5).view(-1, 1, 1, 1).expand_as(x)
    return _blend(level, x, 1 + mag)


def brightness(x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance.Brightness(img).enhance(1 + mag)``: blend with black."""
    return _blend(torch.zeros_like(x), x, 1 + mag)


def sharpness(x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance.Sharpness(img).enhance(1 + mag)``: blend with the SMOOTH-filtered image."""
    c = x.shape[1]
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device) / 13.0
    smooth = F.conv2d(x.to(torch.float32), kernel.expand(c, 1, 3, 3).contiguous(), groups=c)
    degenerate = x.to(torch.float32).clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth.round()  # PIL keeps the 1-pixel border unfiltered
    return _blend(degenerate, x, 1 + mag)


def posterize(x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """Keep the top ``mag`` bits of each value (PIL ``ImageOps.posterize``)."""
    bits = mag.round().to(torch.int32).clamp(0, 8)
    mask = ((torch.full_like(bits, 255) << (8 - bits)) & 255).to(torch.uint8).view(-1, 1, 1, 1)
    return x & mask


def solarize(x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """Invert values at or above the threshold ``mag`` (PIL ``ImageOps.solarize``)."""
    thr = mag.to(torch.float32).view(-1, 1, 1, 1)
    return torch.where(x.to(torch.float32) < thr, x, 255 - x)


def invert(x: torch.Tensor, mag: torch.Tensor | None = None) -> torch.Tensor:
    """``255 - x`` (PIL ``ImageOps.invert``)."""
    return 255 - x


def autocontrast(x: torch.Tensor, mag: torch.Tensor | None = None) -> torch.Tensor:
    """Stretch each channel to [0, 255] (PIL ``ImageOps.autocontrast`` with cutoff 0)."""
    flat = x.flatten(2)
    lo = flat.amin(dim=2).to(torch.float64)[..., None, None]
    hi = flat.amax(dim=2).to(torch.float64)[..., None, None]
    # A true division (``255.0 / tensor`` would multiply by a reciprocal and round differently from PIL).
    scale = torch.full_like(hi, 255.0) / (hi - lo).clamp_min(1)
    out = torch.floor(x.to(torch.float64) * scale - lo * scale).clamp(0, 255).to(torch.uint8)
    return torch.where(hi > lo, out, x)


def equalize(x: torch.Tensor, mag: torch.Tensor | None = None) -> torch.Tensor:
    """Per-channel histogram equalization (PIL ``ImageOps.equalize``), integer-exact."""
    m, c = x.shape[:2]
    flat = x.flatten(2).to(torch.int64)  # [M, C, HW]
    hist = torch.zeros(m, c, 256, dtype=torch.int64, device=x.device)
    hist.scatter_add_(2, flat, torch.ones_like(flat))
    total = hist.sum(dim=2, keepdim=True)
    top = flat.amax(dim=2, keepdim=True)
    last = hist.gather(2, top)  # count of the highest value present
    step = (total - last) // 255  # current Pillow; Pillow < 10.1 divided by 256
    before = torch.cumsum(hist, dim=2) - hist  # values strictly below each level
    lut = ((step // 2 + before) // step.clamp_min(1)).clamp(0, 255)
    out = lut.gather(2, flat).to(torch.uint8).view_as(x)
    return torch.where((step > 0).view(m, c, 1, 1), out, x)


AUTOAUGMENT_OPS = MappingProxyType(
    {
        "shearX": shear_x,
        "shearY": shear_y,
        "translateX": translate_x,
        "translateY": translate_y,
        "rotate": rotate,
        "color": color,
        "posterize": posterize,
        "solarize": solarize,
        "contrast": contrast,
        "sharpness": sharpness,
        "brightness": brightness,
        "autocontrast": autocontrast,
        "equalize": equalize,
        "invert": invert,
    }
)
_SIGNED = {"shearX", "shearY", "translateX", "translateY", "rotate", "color", "contrast", "sharpness", "brightness"}


def _levels(name: str) -> list[float]:
    """Magnitude for levels 0..9 of an op, as in the reference CIFAR10Policy."""

    def lin(a: float, b: float) -> list[float]:
        return [a + (b - a) * i / 9 for i in range(10)]

    table = {
        "shearX": lin(0, 0.3),
        "shearY": lin(0, 0.3),
        "translateX": lin(0, 150 / 331),
        "translateY": lin(0, 150 / 331),
        "rotate": lin(0, 30),
        "color": lin(0.0, 0.9),
        "posterize": [float(round(v)) for v in lin(8, 4)],
        "solarize": lin(256, 0),
        "contrast": lin(0.0, 0.9),
        "sharpness": lin(0.0, 0.9),
        "brightness": lin(0.0, 0.9),
    }
    return table.get(name, [0.0] * 10)


# (p1, op1, level1, p2, op2, level2): the 25 sub-policies of AutoAugment's CIFAR-10 policy.
CIFAR10_POLICY = (
    (0.1, "invert", 7, 0.2, "contrast", 6),
    (0.7, "rotate", 2, 0.3, "translateX", 9),
    (0.8, "sharpness", 1, 0.9, "sharpness", 3),
    (0.5, "shearY", 8, 0.7, "translateY", 9),
    (0.5, "autocontrast", 8, 0.9, "equalize", 2),
    (0.2, "shearY", 7, 0.3, "posterize", 7),
    (0.4, "color", 3, 0.6, "brightness", 7),
    (0.3, "sharpness", 9, 0.7, "brightness", 9),
    (0.6, "equalize", 5, 0.5, "equalize", 1),
    (0.6, "contrast", 7, 0.6, "sharpness", 5),
    (0.7, "color", 7, 0.5, "translateX", 8),
    (0.3, "equalize", 7, 0.4, "autocontrast", 8),
    (0.4, "translateY", 3, 0.2, "sharpness", 6),
    (0.9, "brightness", 6, 0.2, "color", 8),
    (0.5, "solarize", 2, 0.0, "invert", 3),
    (0.2, "equalize", 0, 0.6, "autocontrast", 0),
    (0.2, "equalize", 8, 0.6, "equalize", 4),
    (0.9, "color", 9, 0.6, "equalize", 6),
    (0.8, "autocontrast", 4, 0.2, "solarize", 8),
    (0.1, "brightness", 3, 0.7, "color", 0),
    (0.4, "solarize", 5, 0.9, "autocontrast", 3),
    (0.9, "translateY", 9, 0.7, "translateY", 9),
    (0.9, "autocontrast", 2, 0.8, "solarize", 3),
    (0.8, "equalize", 8, 0.1, "invert", 3),
    (0.7, "translateY", 9, 0.9, "autocontrast", 1),
)


def _policy_tables(device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    names = list(AUTOAUGMENT_OPS)
    stages = []
    for s in range(2):
        probs = torch.tensor([p[3 * s] for p in CIFAR10_POLICY], device=device)
        ops = torch.tensor([names.index(p[3 * s + 1]) for p in CIFAR10_POLICY], device=device)
        mags = torch.tensor(
            [_levels(p[3 * s + 1])[p[3 * s + 2]] for p in CIFAR10_POLICY], dtype=torch.float64, device=device
        )
        signed = torch.tensor([p[3 * s + 1] in _SIGNED for p in CIFAR10_POLICY], device=device)
        stages.append((probs, ops, mags, signed))
    return stages


def autoaugment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """AutoAugment CIFAR10Policy on a uint8 batch: one random sub-policy per sample, ops batched by kind.

    Shape:
        x: uint8 ``[B, C, H, W]`` (C = 1 or 3); returns the same shape and dtype.
    """
    if x.dtype != torch.uint8:
        raise ValueError(f"autoaugment needs a uint8 batch, got {x.dtype}")
    bsz = x.shape[0]
    if bsz == 0:
        return x
    device = x.device
    out = x.clone()
    policy = _randint(0, len(CIFAR10_POLICY), bsz, generator, device)
    names = list(AUTOAUGMENT_OPS)
    for probs, ops, mags, signed in _policy_tables(device):
        apply = _rand(bsz, generator, device) < probs[policy]
        sign = torch.where(_rand(bsz, generator, device) < 0.5, -1.0, 1.0).to(torch.float64)
        op = torch.where(apply, ops[policy], torch.full_like(policy, -1))
        mag = mags[policy] * torch.where(signed[policy], sign, torch.ones_like(sign))
        for k, name in enumerate(names):
            idx = torch.nonzero(op == k).flatten()
            if idx.numel():
                out[idx] = AUTOAUGMENT_OPS[name](out[idx], mag[idx])
    return out
