"""A float32 copy that streams: the fastest plain copy we can write, for the memory-traffic floor.

``torch``'s ``dst.copy_(src)`` (glibc ``memcpy``) writes through the cache below glibc's
non-temporal threshold, so every destination line is first read (read-for-ownership):
three transfers per copied line instead of two. This copy uses non-temporal stores (and
software prefetch), as our C kernel does, so the floor is not measured on a copy slower
than the machine allows. Compiled once with the system C compiler, like the kernel;
:func:`load` returns None where that fails (the floor then uses ``copy_`` alone).
"""

from __future__ import annotations

import ctypes
import functools

import torch

_SOURCE = r"""
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
void copy_f32(float *restrict dst, const float *restrict src, int64_t n, int threads) {
    const int64_t block = 1 << 16;
    const int64_t nblocks = (n + block - 1) / block;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t c = 0; c < nblocks; ++c) {
        int64_t i = c * block;
        const int64_t end = i + block < n ? i + block : n;
#if defined(__AVX512F__)
        for (; i < end && ((uintptr_t)(dst + i) & 63); ++i) dst[i] = src[i];
        for (; i + 16 <= end; i += 16) {
            _mm_prefetch((const char *)(src + i + 512), _MM_HINT_T0);
            _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
        }
#endif
        if (i < end) memcpy(dst + i, src + i, (size_t)(end - i) * sizeof(float));
    }
#if defined(__AVX512F__)
    _mm_sfence();
#endif
}
"""
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=gnu11"]


@functools.cache
def load() -> ctypes.CDLL | None:
    """The copy, built and checked as the kernel is (private cache, sidecar hash); None without a compiler."""
    from tspike_lab.kernels import build

    try:
        lib = build.load_library("stream_copy", {"copy.c": _SOURCE.encode()}, [_FLAGS])
    except build.KernelUnavailable:
        return None
    lib.copy_f32.restype = None
    lib.copy_f32.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
    return lib


def streaming_copy(dst: torch.Tensor, src: torch.Tensor):
    """``fn()`` copying contiguous float32 CPU ``src`` into ``dst`` with streaming stores, or None."""
    lib = load()
    if lib is None or src.device.type != "cpu" or src.dtype != torch.float32:
        return None
    if not (src.is_contiguous() and dst.is_contiguous() and src.numel() == dst.numel()):
        raise ValueError("streaming_copy needs two contiguous float32 tensors of one size")
    threads = torch.get_num_threads()
    return lambda: lib.copy_f32(dst.data_ptr(), src.data_ptr(), src.numel(), threads)
