"""Spike functions with surrogate gradients, binary and ternary.

Every surrogate here is a small object with:

- ``grad(x)``: the derivative of the smoothed Heaviside at ``x = u - threshold``;
- ``__call__(x)``: snnTorch's ``spike_grad`` convention, ``H(x)`` forward with
  ``grad(x)`` backward, so any of them can be passed as ``spike_grad=`` to
  ``snntorch.Leaky`` too;
- ``ternary_grad(u, threshold)``: the derivative used for the ternary spike
  ``b = H(u - th) - H(-u - th)``, by default ``grad(u - th) + grad(-u - th)``.

The paper's released code uses a clipped straight-through estimator on the whole
ternary function (``STE``): ``d b / d u = 1`` where ``|u / V_th| <= 1`` with
``V_th = 2 * threshold`` (the code compares ``|u / V_th|`` with 0.5, ``V_th = 1``).
The window is closed, as the paper's text has it: at exactly ``|u / V_th| = 1`` the
gradient is 1. Ours compares, so this holds in every torch version; the released code
takes the gradient of ``clamp(u / V_th, -1, 1)``, which is 1 at the bound up to torch
2.13 and 0 from torch 2.14.

Forward convention, as in the paper (Eq. 8): a spike fires where ``u >= threshold``
(binary) or ``|u| >= threshold`` (ternary).
"""

from __future__ import annotations

import math

import torch

from .errors import ConfigError

__all__ = [
    "Surrogate",
    "STE",
    "Triangle",
    "ATan",
    "Sigmoid",
    "ste",
    "triangle",
    "atan",
    "sigmoid",
    "get",
    "SURROGATES",
    "heaviside",
    "ternary",
]


class Surrogate:
    """Base class: a smoothed Heaviside derivative ``grad(x)``, ``x = u - threshold``."""

    name = "base"

    def grad(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def ternary_grad(self, u: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        """d/du [H(u - th) - H(-u - th)] ~ grad(u - th) + grad(-u - th)."""
        return self.grad(u - threshold) + self.grad(-u - threshold)

    def binary_grad(self, u: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        """d/du H(u - th) ~ grad(u - th)."""
        return self.grad(u - threshold)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """snnTorch ``spike_grad`` convention: ``H(x)`` with this surrogate's backward."""
        return _ShiftedHeaviside.apply(x, self)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))


class STE(Surrogate):
    """Clipped straight-through estimator of the released code.

    Binary: ``dS/du = 1`` where ``0 <= u <= 2 th`` (clamp(u / V_th, 0, 1), V_th = 2 th).
    Ternary: ``db/du = 1`` where ``|u| <= 2 th`` (clamp(u / V_th, -1, 1)).
    Both windows are closed (1 at their ends), by comparison, in every torch version.

    Args:
        width: half-width of the window as a multiple of the threshold (2 = the paper's code).
    """

    name = "ste"

    def __init__(self, width: float = 2.0):
        if not width > 0:
            raise ConfigError.bad(type(self).__name__, "width", width, "> 0")
        self.width = float(width)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        # Window used when this object is passed as snnTorch's spike_grad (x = u - th):
        # unit height on |x| <= (width / 2) * 1.0, the threshold being unknown here.
        return (x.abs() <= self.width / 2).to(x.dtype)

    def binary_grad(self, u, threshold):
        return ((u >= 0) & (u <= self.width * threshold)).to(u.dtype)

    def ternary_grad(self, u, threshold):
        return (u.abs() <= self.width * threshold).to(u.dtype)


class Triangle(Surrogate):
    """Triangle: ``grad(x) = max(0, 1 - |x| / w) / w`` (integrates to 1)."""

    name = "triangle"

    def __init__(self, width: float = 0.5):
        if not width > 0:
            raise ConfigError.bad(type(self).__name__, "width", width, "> 0")
        self.width = float(width)

    def grad(self, x):
        return (1.0 - x.abs() / self.width).clamp_min(0.0) / self.width


class ATan(Surrogate):
    """Arc-tangent (snnTorch's default): ``grad(x) = (alpha/2) / (1 + (pi alpha x / 2)^2)``."""

    name = "atan"

    def __init__(self, alpha: float = 2.0):
        if not alpha > 0:
            raise ConfigError.bad(type(self).__name__, "alpha", alpha, "> 0")
        self.alpha = float(alpha)

    def grad(self, x):
        return (self.alpha / 2) / (1 + (math.pi / 2 * self.alpha * x) ** 2)


class Sigmoid(Surrogate):
    """Logistic: ``grad(x) = k sigma(k x) (1 - sigma(k x))``."""

    name = "sigmoid"

    def __init__(self, slope: float = 5.0):
        if not slope > 0:
            raise ConfigError.bad(type(self).__name__, "slope", slope, "> 0")
        self.slope = float(slope)

    def grad(self, x):
        s = torch.sigmoid(self.slope * x)
        return self.slope * s * (1 - s)


def ste(width: float = 2.0) -> STE:
    """The released code's clipped straight-through estimator."""
    return STE(width)


def triangle(width: float = 0.5) -> Triangle:
    return Triangle(width)


def atan(alpha: float = 2.0) -> ATan:
    return ATan(alpha)


def sigmoid(slope: float = 5.0) -> Sigmoid:
    return Sigmoid(slope)


SURROGATES = {"ste": STE, "triangle": Triangle, "atan": ATan, "sigmoid": Sigmoid}


def get(spike_grad) -> object:
    """Resolve ``spike_grad``: None (the paper's STE), a name, a Surrogate or any callable."""
    if spike_grad is None:
        return STE()
    if isinstance(spike_grad, str):
        if spike_grad not in SURROGATES:
            raise ConfigError.bad("", "spike_grad", spike_grad, f"one of {sorted(SURROGATES)} or a callable")
        return SURROGATES[spike_grad]()
    if isinstance(spike_grad, Surrogate) or callable(spike_grad):
        return spike_grad
    raise ConfigError.bad("", "spike_grad", spike_grad, f"one of {sorted(SURROGATES)}, a Surrogate or a callable")


class _ShiftedHeaviside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sg):
        ctx.save_for_backward(x)
        ctx.sg = sg
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.sg.grad(x), None


class _Binary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, threshold, sg):
        ctx.save_for_backward(u, threshold)
        ctx.sg = sg
        return (u >= threshold).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        u, threshold = ctx.saved_tensors
        return grad_out * ctx.sg.binary_grad(u, threshold), None, None


class _Ternary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, threshold, sg):
        ctx.save_for_backward(u, threshold)
        ctx.sg = sg
        return (u >= threshold).to(u.dtype) - (u <= -threshold).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        u, threshold = ctx.saved_tensors
        return grad_out * ctx.sg.ternary_grad(u, threshold), None, None


def _as_tensor(threshold, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(threshold, dtype=like.dtype, device=like.device)


def heaviside(u: torch.Tensor, threshold, spike_grad=None) -> torch.Tensor:
    """Binary spike ``S = 1[u >= threshold]`` with a surrogate backward.

    ``spike_grad`` may be a :class:`Surrogate` or any snnTorch-style callable ``f(u - th)``.
    """
    sg = get(spike_grad)
    th = _as_tensor(threshold, u)
    if isinstance(sg, Surrogate):
        return _Binary.apply(u, th, sg)
    return sg(u - th)


def ternary(u: torch.Tensor, threshold, spike_grad=None) -> torch.Tensor:
    """Ternary spike (Eq. 8): ``b = +1 if u >= th, -1 if u <= -th, else 0``.

    With a snnTorch callable ``f``: ``b = f(u - th) - f(-u - th)``.
    """
    sg = get(spike_grad)
    th = _as_tensor(threshold, u)
    if isinstance(sg, Surrogate):
        return _Ternary.apply(u, th, sg)
    return sg(u - th) - sg(-u - th)
