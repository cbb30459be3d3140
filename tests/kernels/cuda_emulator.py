"""Run mx.fast.cuda_kernel sources on the CPU: each kernel's source is compiled with g++ against
cuda_emulator/emu.h (threads, __syncthreads, warp shuffles, bf16, wmma) and launched block by block.

What it checks: the kernels' indexing, tiling and synchronization, with the arithmetic of the CUDA code itself
(float32 math, bf16 roundings, float32 wmma accumulation). What it cannot: speed, the register layout of wmma
fragments (the emulated fragments hold whole tiles; the kernels only ever scale a fragment by one scalar and
go through shared memory for anything element-wise), races the OS scheduler happens not to expose. Outputs
start as NaN, so an element a kernel never writes shows up.

    with emulated(module):      # mx.fast.cuda_kernel emulated, module.cuda_available() True
        module.some_wrapper(...)
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import mlx.core as mx
import numpy as np

HERE = Path(__file__).resolve().parent / "cuda_emulator"
CACHE = Path(tempfile.gettempdir()) / "xlstm_mlx_cuda_emulator"
CT = {mx.float32: "float", mx.bfloat16: "__nv_bfloat16", mx.int32: "int32_t", mx.uint32: "uint32_t"}
PRELUDE = """#include "emu.h"
#include <math.h>
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
"""
# no strict aliasing: the kernels read 16-byte vectors through bf16 pairs (the CUDA idiom), which g++ -O2 may
# otherwise drop as undefined behaviour (it did: an emulated bf16 kernel read zeros)
CXXFLAGS = ("-O2", "-fno-strict-aliasing", "-std=c++20", "-pthread", "-shared", "-fPIC", "-Wno-unknown-pragmas")
_libs: dict[str, ctypes.CDLL] = {}


def available() -> bool:
    return shutil.which("g++") is not None


def _library(input_names, output_names, source, header, inputs, output_dtypes, template):
    params, unpack, idx = [], [], 0
    for n, a in zip(input_names, inputs):
        params.append(f"const {CT[a.dtype]}* {n}")
        unpack.append(f"(const {CT[a.dtype]}*)a[{idx}]")
        idx += 1
        if n + "_shape" in source:
            params.append(f"const int* {n}_shape")
            unpack.append(f"(const int*)a[{idx}]")
            idx += 1
        if n + "_ndim" in source:
            params.append(f"const int {n}_ndim")
            unpack.append(f"*(const int*)a[{idx}]")
            idx += 1
    for n, d in zip(output_names, output_dtypes):
        params.append(f"{CT[d]}* {n}")
        unpack.append(f"({CT[d]}*)a[{idx}]")
        idx += 1
    consts = ""
    for n, v in template:
        if isinstance(v, bool):
            consts += f"  constexpr bool {n} = {'true' if v else 'false'};\n"
        elif isinstance(v, int):
            consts += f"  constexpr int {n} = {v};\n"
        else:
            consts += f"  using {n} = {CT[v]};\n"
    hdr = "\n".join(line for line in header.splitlines() if not line.strip().startswith("#include"))
    src = PRELUDE + hdr + f"\nstatic void kern({', '.join(params)}) {{\n{consts}\n{source}\n}}\n"
    src += ('extern "C" void launch(int blocks, int threads, void** a) '
            f'{{ emu_launch(blocks, threads, [&] {{ kern({", ".join(unpack)}); }}); }}\n')
    key = hashlib.sha1((src + (HERE / "emu.h").read_text() + " ".join(CXXFLAGS)).encode()).hexdigest()[:16]
    CACHE.mkdir(parents=True, exist_ok=True)
    so = CACHE / f"k_{key}.so"
    if not so.exists():
        cpp = CACHE / f"k_{key}.cpp"
        cpp.write_text(src)
        r = subprocess.run(["g++", *CXXFLAGS, "-I", str(HERE), str(cpp), "-o", str(so)], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"g++ failed on the emulated kernel:\n{r.stderr[:4000]}")
    if str(so) not in _libs:
        _libs[str(so)] = ctypes.CDLL(str(so))
    return _libs[str(so)]


def _host(x: mx.array) -> np.ndarray:
    if x.dtype == mx.bfloat16:
        return np.ascontiguousarray(np.array(x.view(mx.uint16)))
    return np.ascontiguousarray(np.array(x))


def fake_cuda_kernel(name, input_names, output_names, source, header="", ensure_row_contiguous=True, **_):
    def call(inputs, output_shapes, output_dtypes, grid, threadgroup, template=(), **__):
        lib = _library(input_names, output_names, source, header, inputs, output_dtypes, template)
        keep, ptrs = [], []
        for n, a in zip(input_names, inputs):
            arr = _host(a)
            keep.append(arr)
            ptrs.append(arr.ctypes.data)
            if n + "_shape" in source:
                shape = np.array(list(a.shape) + [0] * (10 - a.ndim), dtype=np.int32)
                keep.append(shape)
                ptrs.append(shape.ctypes.data)
            if n + "_ndim" in source:
                nd = np.array([a.ndim], dtype=np.int32)
                keep.append(nd)
                ptrs.append(nd.ctypes.data)
        outs = []
        for s, d in zip(output_shapes, output_dtypes):
            o = (np.full(s, 0x7FC0, np.uint16) if d == mx.bfloat16 else np.full(s, np.nan, np.float32)
                 if d == mx.float32 else np.zeros(s, np.int32))
            outs.append(o)
            ptrs.append(o.ctypes.data)
        assert grid[0] % threadgroup[0] == 0 and grid[1] == grid[2] == 1 and threadgroup[1] == threadgroup[2] == 1
        lib.launch(grid[0] // threadgroup[0], threadgroup[0], (ctypes.c_void_p * len(ptrs))(*ptrs))
        return [mx.array(o).view(mx.bfloat16) if d == mx.bfloat16 else mx.array(o) for o, d in zip(outs, output_dtypes)]
    return call


def _forget_cached_kernel(module) -> None:
    """Modules that cache their one compiled kernel in `_kernel` (not a function of theirs of that name)."""
    k = getattr(module, "_kernel", ...)
    if k is not ... and getattr(k, "__module__", None) != module.__name__:
        module._kernel = None


@contextlib.contextmanager
def emulated(*modules):
    """mx.fast.cuda_kernel emulated on the CPU; each module's cuda_available() True and its kernel cache empty."""
    real_kernel = mx.fast.cuda_kernel
    saved = [(m, m.cuda_available) for m in modules]
    mx.fast.cuda_kernel = fake_cuda_kernel
    for m in modules:
        m.cuda_available = lambda: True
        getattr(m, "_kernels", {}).clear()
        _forget_cached_kernel(m)
    try:
        yield
    finally:
        mx.fast.cuda_kernel = real_kernel
        for m, fn in saved:
            m.cuda_available = fn
            getattr(m, "_kernels", {}).clear()
            _forget_cached_kernel(m)
