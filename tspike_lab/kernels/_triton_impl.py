"""Triton kernels of the multi-step LIF (imported only by :mod:`.triton_lif`, only when needed).

One program owns ``BLOCK`` neurons and runs the whole time loop on them with the state
in registers: the forward reads ``x`` once and writes spikes, the one-byte code and the
membrane rows the backward needs (:mod:`.spec`); the backward walks t = T-1 .. 0 once.
With an amplitude (``AMP``: 1 one value, 2 one per channel ``a[(n // a_div) % a_mod]``) the
forward writes ``a * b`` and the backward forms ``dL/db = dL/dout * a`` as it reads
``dL/dout``; with ``GRAD_A`` it also writes each neuron's ``sum_t dL/dout_t * b_t`` (float32),
which the caller reduces to dL/da.

Rounding follows the oracle's eager ops: arithmetic runs in float32 and, for float16 /
bfloat16 storage, every intermediate is rounded to the storage type where an eager op
would write a tensor (``_rnd``). Launches pass ``enable_fp_fusion=False`` so no
multiply-add is contracted into an FMA, which would move spikes at the threshold.

Divisions follow PyTorch's CUDA kernels, since Triton's ``/`` compiles to an approximate
division on NVIDIA GPUs: a tensor over a Python number (the triangle's ``|x| / width``) is a
multiply by the float32 reciprocal ``inv_p``, as PyTorch's CUDA division by a CPU scalar
computes it; a number over a tensor (``reciprocal``, the sigmoid's ``1 / (1 + e)``) is
``tl.math.div_rn``, IEEE round to nearest. ``tl.exp`` (the sigmoid) stays approximate there,
so the sigmoid's gradients equal the oracle's to a tolerance, not bit for bit.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["lif_fwd_kernel", "lif_bwd_kernel"]


@triton.jit
def _rnd(v, LOWP: tl.constexpr):
    # LOWP: 0 float32 (no rounding), 1 float16, 2 bfloat16.
    if LOWP == 1:
        v = v.to(tl.float16).to(tl.float32)
    elif LOWP == 2:
        # Round to nearest even on the bits: the same on every Triton version and in its
        # CPU interpreter (whose float32 -> bfloat16 cast truncates). Infinities come through
        # unchanged; a NaN (the carry would turn 0x7FFFFFFF into -0.0) stays the NaN it was.
        bits = v.to(tl.uint32, bitcast=True)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).to(tl.float32, bitcast=True)
        v = tl.where(v != v, v, rounded)
    return v


@triton.jit
def _sg(x, p, inv_p, k, half_alpha, SG: tl.constexpr, LOWP: tl.constexpr):
    # ds/dx of the smooth surrogates (surrogate.py), x = u - th. SG: 1 triangle, 2 atan, 3 sigmoid.
    if SG == 1:
        v = _rnd(1.0 - _rnd(tl.abs(x) * inv_p, LOWP), LOWP)  # |x| / width, as PyTorch's CUDA division
        v = tl.where(v < 0.0, 0.0, v)
        r = _rnd(v * inv_p, LOWP)
    elif SG == 2:
        y = _rnd(k * x, LOWP)
        r = _rnd(_rnd(tl.math.div_rn(1.0, _rnd(1.0 + _rnd(y * y, LOWP), LOWP)), LOWP) * half_alpha, LOWP)
    else:
        z = _rnd(p * x, LOWP)
        s = _rnd(tl.math.div_rn(1.0, 1.0 + tl.exp(-z)), LOWP)
        r = _rnd(_rnd(p * s, LOWP) * _rnd(1.0 - s, LOWP), LOWP)
    return r


@triton.jit
def _amplitude(a_ptr, offs, m, a_div, a_mod, AMP: tl.constexpr):
    # AMP 1: one value; 2: one per channel, a[(n // a_div) % a_mod] for offset n within a step.
    if AMP == 1:
        a = tl.load(a_ptr).to(tl.float32)
    else:
        a = tl.load(a_ptr + (offs // a_div) % a_mod, mask=m, other=0.0).to(tl.float32)
    return a


@triton.jit
def lif_fwd_kernel(
    x_ptr,
    b_ptr,
    code_ptr,
    u_ptr,
    a_ptr,
    T,
    N,
    x_stride,
    u_rows,
    a_div,
    a_mod,
    beta,
    th,
    th_sub,
    lim,
    TERNARY: tl.constexpr,
    SUBTRACT: tl.constexpr,
    STE: tl.constexpr,
    SAVE_CODE: tl.constexpr,
    SAVE_U: tl.constexpr,
    AMP: tl.constexpr,
    LOWP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    if AMP != 0:
        a = _amplitude(a_ptr, offs, m, a_div, a_mod, AMP)
    xp = x_ptr + offs
    bp = b_ptr + offs
    cp = code_ptr + offs
    up = u_ptr + offs
    u = tl.zeros([BLOCK], dtype=tl.float32)
    b = tl.zeros([BLOCK], dtype=tl.float32)
    for t in range(T):
        x = tl.load(xp, mask=m, other=0.0).to(tl.float32)
        if SUBTRACT:
            v = _rnd(_rnd(beta * u, LOWP) - _rnd(b * th_sub, LOWP), LOWP)  # beta u - b th
        else:
            v = _rnd(_rnd(beta * u, LOWP) * (1.0 - tl.abs(b)), LOWP)  # (beta u)(1 - |b|)
        v = _rnd(v + x, LOWP)
        s = (v >= th).to(tl.float32)
        if TERNARY:
            s = s - (v <= -th).to(tl.float32)
        u = v
        b = s
        if AMP != 0:
            tl.store(bp, _rnd(s * a, LOWP).to(b_ptr.dtype.element_ty), mask=m)  # a * b, rounded as b * a
        else:
            tl.store(bp, s.to(b_ptr.dtype.element_ty), mask=m)
        if SAVE_CODE:
            c = (s + 1.0).to(tl.int32)
            if STE:
                if TERNARY:
                    w = tl.abs(v) <= lim
                else:
                    w = (v >= 0.0) & (v <= lim)
                c = c | (w.to(tl.int32) << 2)
            tl.store(cp, c.to(tl.uint8), mask=m)
        if SAVE_U:
            tl.store(up, v.to(u_ptr.dtype.element_ty), mask=m & ((offs * 0 + t) < u_rows))
        xp += x_stride
        bp += N
        cp += N
        up += N


@triton.jit
def lif_bwd_kernel(
    g_ptr,
    code_ptr,
    u_ptr,
    gx_ptr,
    a_ptr,
    ga_ptr,
    T,
    N,
    u_rows,
    a_div,
    a_mod,
    beta,
    th,
    th_sub,
    p,
    inv_p,
    k,
    half_alpha,
    TERNARY: tl.constexpr,
    SUBTRACT: tl.constexpr,
    DETACH: tl.constexpr,
    SG: tl.constexpr,
    AMP: tl.constexpr,
    GRAD_A: tl.constexpr,
    LOWP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    if AMP != 0:
        a = _amplitude(a_ptr, offs, m, a_div, a_mod, AMP)
    if GRAD_A:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
    gp = g_ptr + offs
    cp = code_ptr + offs
    up = u_ptr + offs
    xp = gx_ptr + offs
    for _ in range(T - 1):  # to step T-1 by pointer steps (64-bit), no int32 t * N product
        gp += N
        cp += N
        up += N
        xp += N
    gn = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(T):
        t = T - 1 - i
        mu = m & ((offs * 0 + t) < u_rows)
        c = tl.load(cp, mask=m, other=1).to(tl.int32)
        b = ((c & 3) - 1).to(tl.float32)
        if SG == 0:
            s = ((c >> 2) & 1).to(tl.float32)
        else:
            uu = tl.load(up, mask=mu, other=0.0).to(tl.float32)
            s = _sg(_rnd(uu - th, LOWP), p, inv_p, k, half_alpha, SG, LOWP)
            if TERNARY:
                s = _rnd(s + _sg(_rnd(-uu - th, LOWP), p, inv_p, k, half_alpha, SG, LOWP), LOWP)
        G = tl.load(gp, mask=m, other=0.0).to(tl.float32)
        if GRAD_A:
            acc += G * b  # out = a * b: dL/da gets dL/dout * b
        if AMP != 0:
            G = _rnd(G * a, LOWP)  # dL/db = dL/dout * a, as autograd's product
        if SUBTRACT:
            ga = _rnd(gn * beta, LOWP)
            if DETACH:
                gb = G
            else:
                gb = _rnd(G + _rnd((-gn) * th_sub, LOWP), LOWP)
        else:
            ga = _rnd(_rnd(gn * (1.0 - tl.abs(b)), LOWP) * beta, LOWP)
            if DETACH:
                gb = G
            else:
                ur = tl.load(up, mask=mu, other=0.0).to(tl.float32)
                gb = _rnd(G + (-_rnd(gn * _rnd(beta * ur, LOWP), LOWP)) * b, LOWP)
        gn = _rnd(_rnd(gb * s, LOWP) + ga, LOWP)
        tl.store(xp, gn.to(gx_ptr.dtype.element_ty), mask=m)
        gp -= N
        cp -= N
        up -= N
        xp -= N
    if GRAD_A:
        tl.store(ga_ptr + offs, acc, mask=m)
