"""Compile this package's mx.fast.cuda_kernel sources with NVRTC on a machine without a GPU (a developer's check).

MLX's CUDA backend JIT-compiles each custom kernel on first use, so a syntax or type error in a kernel shows up
only on the GPU machine. This script catches those here: it replaces mx.fast.cuda_kernel by a stand-in that
builds the kernel source the way MLX 0.32's CUDA backend does (mlx/backend/cuda/custom_kernel.cpp: its default
header, the signature from the input dtypes, `<name>_shape/_strides/_ndim` where the source uses them, the
template constants), compiles it to PTX for sm_90 with NVRTC and returns zero outputs of the requested shapes,
so the Python wrapper runs to its end. It checks that the kernels compile, never what they compute: the GPU
parity tests (XLSTM_MLX_TEST_DEVICE=gpu) do that.

Set-up (developer tools, not a dependency of the package):
    pip install nvidia-cuda-nvrtc==13.5.37 nvidia-cuda-runtime==13.5.37 nvidia-cuda-crt==13.5.37 nvidia-cuda-cccl

    python scripts/cuda_compile_check.py            # every kernel wrapper listed in CHECKS, small shapes
    python scripts/cuda_compile_check.py --show NAME  # also print the generated source of kernels matching NAME
    python scripts/cuda_compile_check.py --resources  # SASS for sm_90: registers, spills, shared memory per kernel

From Python: `with nvrtc_kernels() as log: <call a wrapper>`; log.compiled lists (kernel name, ok, message).
MLX's own device header (mlx/backend/cuda/device/utils.cuh) is not in the wheels; DEVICE_UTILS below stands in
for the part a custom kernel sees (Shape, Strides as cuda::std::array, MAX_NDIM).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx.core as mx  # noqa: E402

ARCH = "compute_90"
DEVICE_UTILS = """
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda/std/array>
#include <cuda/std/limits>
#include <cuda/std/cstdint>
#define MAX_NDIM 10
namespace mlx::core::cu {
using Shape = cuda::std::array<int32_t, MAX_NDIM>;
using Strides = cuda::std::array<int64_t, MAX_NDIM>;
}
using namespace mlx::core::cu;
"""
DEFAULT_HEADER = """
#include <cooperative_groups.h>

#define inf cuda::std::numeric_limits<float>::infinity()
"""
CUDA_TYPES = {mx.float32: "float", mx.float16: "__half", mx.bfloat16: "__nv_bfloat16", mx.int32: "int32_t",
              mx.uint32: "uint32_t", mx.int64: "int64_t", mx.uint64: "uint64_t", mx.int8: "int8_t",
              mx.uint8: "uint8_t", mx.int16: "int16_t", mx.uint16: "uint16_t", mx.bool_: "bool"}


def _nvrtc():
    import nvidia

    for base in nvidia.__path__:
        for lib in sorted(Path(base).glob("cu*/lib/libnvrtc.so*")) + sorted(Path(base).glob("cuda_nvrtc/lib/libnvrtc.so*")):
            if "builtins" not in lib.name:
                return ctypes.CDLL(str(lib)), [str(p) for p in Path(base).glob("cu*/include")] + \
                    [str(p) for p in Path(base).glob("cu*/include/cccl")]
    raise SystemExit("libnvrtc not found: pip install nvidia-cuda-nvrtc==13.5.37 nvidia-cuda-runtime==13.5.37 "
                     "nvidia-cuda-crt==13.5.37 "
                     "nvidia-cuda-cccl")


def _hash(template) -> str:
    out = ""
    for _, arg in template:
        if isinstance(arg, bool):
            out += "_t" if arg else "_f"
        elif isinstance(arg, int):
            out += f"_{arg}"
        else:
            out += "_" + {mx.float32: "float32", mx.bfloat16: "bfloat16", mx.float16: "float16"}.get(arg, str(arg))
    return out


def build_source(name, input_names, output_names, source, header, inputs, output_dtypes, template) -> str:
    """The kernel source as MLX's CUDA backend builds it (custom_kernel.cpp build_kernel)."""
    src = DEVICE_UTILS + DEFAULT_HEADER + header + "namespace mlx::core::cu {\n\nnamespace cg = cooperative_groups;\n\n"
    src += f"__global__ void custom_kernel_{name}{_hash(template)}(\n"
    for n, a in zip(input_names, inputs):
        src += f"    const {CUDA_TYPES[a.dtype]}* {n},\n"
        if a.ndim > 0:
            if n + "_shape" in source:
                src += f"    const __grid_constant__ Shape {n}_shape,\n"
            if n + "_strides" in source:
                src += f"    const __grid_constant__ Strides {n}_strides,\n"
            if n + "_ndim" in source:
                src += f"    const __grid_constant__ int {n}_ndim,\n"
    src += ",\n".join(f"    {CUDA_TYPES[d]}* {n}" for n, d in zip(output_names, output_dtypes)) + ") {\n"
    for n, arg in template:
        if isinstance(arg, bool):
            src += f"  constexpr bool {n} = {'true' if arg else 'false'};\n"
        elif isinstance(arg, int):
            src += f"  constexpr int {n} = {arg};\n"
        else:
            src += f"  using {n} = {CUDA_TYPES[arg]};\n"
    return src + "\n" + source + "\n}\n\n} // namespace mlx::core::cu\n"


def compile_ptx(source: str, name: str, resources: bool = False) -> tuple[bool, str]:
    """PTX for ARCH; with `resources`, SASS for sm_90 with ptxas' report (registers, spills, shared memory)."""
    lib, includes = _nvrtc()
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), f"{name}.cu".encode(), 0, None, None)
    if rc != 0:
        return False, f"nvrtcCreateProgram failed ({rc})"
    arch = ARCH.replace("compute_", "sm_") if resources else ARCH
    opts = [f"--gpu-architecture={arch}", "-std=c++17", "-default-device", "--device-as-default-execution-space"]
    opts += ["--ptxas-options=--verbose"] if resources else []
    opts += [f"-I{i}" for i in includes]
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, buf)
    msg = buf.value.decode(errors="replace").strip()
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc == 0, msg


@dataclass
class Log:
    compiled: list = field(default_factory=list)  # (kernel name, ok, message)
    show: str | None = None
    sources: dict = field(default_factory=dict)
    resources: bool = False


@contextlib.contextmanager
def nvrtc_kernels(show: str | None = None, resources: bool = False):
    """Inside: mx.fast.cuda_kernel compiles with NVRTC and returns zeros; cuda_available() is True."""
    from xlstm_mlx.kernels import cuda_common

    log = Log(show=show, resources=resources)
    real_kernel, real_available = mx.fast.cuda_kernel, cuda_common.cuda_available

    def fake_kernel(name, input_names, output_names, source, header="", ensure_row_contiguous=True, **_):
        def call(inputs, output_shapes, output_dtypes, grid, threadgroup, template=(), **__):
            src = build_source(name, input_names, output_names, source, header, inputs, output_dtypes, template)
            key = name + _hash(template)
            if key not in log.sources:
                log.sources[key] = src
                ok, msg = compile_ptx(src, key, log.resources)
                log.compiled.append((key, ok, msg))
                if show and show in key:
                    print(src)
            for g, t in zip(grid, threadgroup):
                assert t >= 1 and g >= 1, f"{key}: empty grid {grid} / threadgroup {threadgroup}"
            assert threadgroup[0] * threadgroup[1] * threadgroup[2] <= 1024, f"{key}: > 1024 threads per block"
            return [mx.zeros(s, d) for s, d in zip(output_shapes, output_dtypes)]
        return call

    mx.fast.cuda_kernel = fake_kernel
    patched = []
    for mod in list(sys.modules.values()):  # modules that imported cuda_available by name
        if getattr(mod, "__name__", "").startswith("xlstm_mlx") and getattr(mod, "cuda_available", None) is real_available:
            patched.append(mod)
            mod.cuda_available = lambda: True
    try:
        yield log
    finally:
        mx.fast.cuda_kernel = real_kernel
        for mod in patched:
            mod.cuda_available = real_available


def _checks():
    """(label, thunk) pairs: each thunk calls one kernel wrapper with small, representative inputs."""
    import importlib

    r = lambda *s, dt=mx.bfloat16: mx.random.normal(s).astype(dt)  # noqa: E731
    checks = []
    for modname, fn in CHECKS:
        mod = importlib.import_module(modname)
        checks.append((f"{modname}.{fn.__name__}", lambda mod=mod, fn=fn: fn(mod, r)))
    return checks


def _headnorm(mod, r):
    mod.headnorm_gate(r(2, 8, 512), r(2, 8 * 512 * 3), 4096, r(8 * 512), None, 1e-6)


def _add_rms(mod, r):
    f32 = mx.float32
    mod.add_rms_norm(r(2, 4096, dt=f32), r(2, 4096, dt=f32), r(4096, dt=f32), None, 1e-6, mx.bfloat16)


def _swiglu(mod, r):
    mod.swiglu(r(2, 3, 2 * 4096))
    mod.swiglu(r(5, 2 * 136, dt=mx.float32))
    mod.swiglu(r(1, 2 * 10944), 11008)  # the padded FFN down's input (models/xlstm7b/fuse.py)


def _gate_preact(mod, r):
    """The 7B prefill and the most outputs with a partial tile, in both layouts (a warp a row pair, a thread a row)."""
    f32 = mx.float32
    defaults = (mod.PARTS, mod.RPT)
    try:
        for mod.PARTS, mod.RPT in ((32, 2), (16, 1)):
            mod.gate_preact_cuda(r(1, 2048, 4096, dt=f32), r(16, 4096, dt=f32), r(16, dt=f32), 8, 15.0)
            mod.gate_preact_cuda(r(3, 300, dt=f32), r(32, 300, dt=f32), None, 16, None)
    finally:
        mod.PARTS, mod.RPT = defaults


def _decode_step(mod, r):
    f32 = mx.float32
    for B, tj in ((1, None), (16, None), (64, 128)):
        state = (r(B, 8, 256, 512, dt=f32), r(B, 8, 256, dt=f32), r(B, 8, 1, dt=f32))
        mod.mlstm_decode_step_cuda(r(B, 3 * 2048 + 2 * 4096), r(B, 16, dt=f32), state, 8, 2048, 4096, 15.0, 1e-6, tj=tj)
        proj = mod.GateProjection(r(B, 4096, dt=f32), r(16, 4096, dt=f32), r(16, dt=f32) if B > 1 else None)
        mod.mlstm_decode_step_cuda(r(B, 3 * 2048 + 2 * 4096), proj, state, 8, 2048, 4096, 15.0, 1e-6, tj=tj)
        norm = mod.HeadNormGate(r(4096), r(4096) if B > 1 else None, 1e-6, 2 * 2048 + 4096,
                                mx.zeros((B * 8,), mx.uint32))  # the head norm fused (decode, 7B shape)
        mod.mlstm_decode_step_cuda(r(B, 3 * 2048 + 2 * 4096), proj, state, 8, 2048, 4096, 15.0, 1e-6, tj=tj,
                                   norm=norm)


def _embedding(mod, r):
    import mlx.nn as nn
    for dt in (mx.bfloat16, mx.float32):
        table = nn.Embedding(1000, 4096)
        table.weight = table.weight.astype(dt)
        mod.embedding_lookup(table, mx.zeros((16, 1), mx.int32))


def _chunkwise(mod, r):
    """7B head shape (Dqk 256, Dv 512) with a partial last chunk, a small one (Dv 64), both layouts, and the other
    Dv tiles."""
    f32 = mx.float32
    for B, NH, T, dqk, dv in ((1, 2, 2 * 64 + 5, 256, 512), (2, 1, 64, 64, 64)):
        q, k, v = r(B, NH, T, dqk), r(B, NH, T, dqk), r(B, NH, T, dv)
        mod.mlstm_chunkwise_cuda(q, k, v, r(B, NH, T, dt=f32), r(B, NH, T, dt=f32))
    # the model's layout: the fused 7B projection output read in place (mlstm_chunkwise_rows), and one array each
    B, NH, T, dqk, dv = 1, 8, 2 * 64 + 5, 256, 512
    qkvo = r(B, T, 2 * NH * dqk + 2 * NH * dv)
    mod.mlstm_chunkwise_rows(qkvo, qkvo, qkvo, r(B, T, NH, dt=f32), r(B, T, NH, dt=f32), dqk=dqk, dv=dv,
                             offsets=(0, NH * dqk, 2 * NH * dqk))
    mod.mlstm_chunkwise_rows(r(2, 64, 64), r(2, 64, 64), r(2, 64, 64), r(2, 64, 1, dt=f32), r(2, 64, 1, dt=f32),
                             dqk=64, dv=64)
    defaults = (mod.VT_A, mod.VT_B)
    try:  # the other Dv tiles the kernel lab times
        for vt_a, vt_b in ((128, 128), (64, 64)):
            mod.VT_A, mod.VT_B = vt_a, vt_b
            q, k, v = r(1, 1, 64, 256), r(1, 1, 64, 256), r(1, 1, 64, 512)
            mod.mlstm_chunkwise_cuda(q, k, v, r(1, 1, 64, dt=f32), r(1, 1, 64, dt=f32))
    finally:
        mod.VT_A, mod.VT_B = defaults


def _quant_gemv(mod, r):
    """4- and 8-bit, 1 and 16 rows, bf16 and float32 x: the default config; and every config the lab sweeps at
    bf16, 4-bit, 16 rows (the most registers and shared memory)."""
    K, N = 512, 300
    for dt in (mx.bfloat16, mx.float32):
        for bits in (4, 8):
            W, S, B = mx.quantize(r(N, K, dt=dt), group_size=64, bits=bits)
            for rows in (1, 16):
                mod.quantized_gemv_cuda(r(rows, K, dt=dt), W, S, B, r(N, dt=dt), 64, bits)
    W, S, B = mx.quantize(r(N, K), group_size=32, bits=4)
    for cfg in mod.SWEEP_CONFIGS:
        mod.quantized_gemv_cuda(r(16, K), W, S, B, None, 32, 4, **cfg)
    # each x load mode (XPRE 0 / 1 / 2) at 1 and 16 rows, 4 and 8 bits
    for bits in (4, 8):
        W, S, B = mx.quantize(r(N, K), group_size=64, bits=bits)
        for rows in (1, 16):
            for xpre in mod.XPRE_MODES:
                mod.quantized_gemv_cuda(r(rows, K), W, S, B, None, 64, bits, XPRE=xpre)
    # the add-norm tail (kernels/add_rms_norm.py AddNorm): 1 and 4 rows, 4 and 8 bits, with and without the norm's
    # bias and y, float32 x too, and the smallest block (one warp: 16 virtual threads a thread)
    import importlib
    arn = importlib.import_module("xlstm_mlx.kernels.add_rms_norm")
    N = 320
    counter = arn.tail_counter(arn)
    for dt in (mx.bfloat16, mx.float32):
        for bits in (4, 8):
            W, S, B = mx.quantize(r(N, K, dt=dt), group_size=64, bits=bits)
            for rows, nb, want_y in ((1, None, True), (4, r(N, dt=mx.float32), False)):
                norm = arn.AddNorm(r(rows, N, dt=mx.float32), r(N, dt=mx.float32), nb, 1e-6, mx.bfloat16, want_y,
                                   counter)
                mod.quantized_gemv_add_norm_cuda(r(rows, K, dt=dt), W, S, B, None, 64, bits, "affine", norm)
    norm = arn.AddNorm(r(2, N, dt=mx.float32), r(N, dt=mx.float32), None, 1e-6, mx.float32, True, counter)
    mod.quantized_gemv_add_norm_cuda(r(2, K), W, S, B, None, 64, 8, "affine", norm, R=1, U=1, S=3, KSPLIT=1, WARPS=1)


def _bf16_gemv(mod, r):
    """1 and 16 rows (one and two column tiles), with and without bias: the default config; and every config the
    lab sweeps at 1 and 16 rows (16: the most registers)."""
    K, N = 512, 300
    w = r(N, K)
    for rows in (1, 16):
        for bias in (None, r(N)):
            mod.bf16_gemv_cuda(r(rows, K), w, bias)
        for cfg in mod.SWEEP_CONFIGS:
            mod.bf16_gemv_cuda(r(rows, K), w, None, **cfg)
            mod.bf16_gemv_cuda(r(rows, K), w, None, XAHEAD=True, **cfg)   # x loaded a step ahead


def _decode_layer(mod, r):
    """The persistent decode-layer kernel at the 7B shape: 1 and 16 rows, 4 and 8 bits, biases on and off."""
    f32 = mx.float32
    D, NH, qk, vd, ffn = 4096, 8, 2048, 4096, 10944

    def quant(n, k, bits, bias):
        w, s, b = mx.quantize(r(n, k), group_size=64, bits=bits)
        return mod.QuantMatrix(w, s, b, r(n) if bias else None, 64, bits, "affine")

    for B, bits, bias in ((1, 4, False), (16, 8, True), (4, 4, False)):
        L = mod.LayerOperands(
            quant(2 * qk + 2 * vd, D, bits, bias), r(2 * NH, D, dt=f32), r(2 * NH, dt=f32) if bias else None,
            mod.Norm(r(vd), r(vd) if bias else None, 1e-6), quant(D, vd, bits, bias),
            mod.Norm(r(D, dt=f32), None, 1e-6), quant(2 * ffn, D, bits, bias), quant(D, ffn, bits, bias),
            mod.Norm(r(D, dt=f32), r(D, dt=f32) if bias else None, 1e-6), NH, qk, vd, 15.0, 1e-6,
            mx.zeros((16 * NH,), mx.uint32), mx.zeros((16,), mx.uint32))
        state = (r(B, NH, qk // NH, vd // NH, dt=f32), r(B, NH, qk // NH, dt=f32), r(B, NH, 1, dt=f32))
        x = r(B, D, dt=f32)
        mod.decode_layer_cuda(x, x, r(B, D), state, L)


CHECKS = [("xlstm_mlx.kernels.decode_layer", _decode_layer), ("xlstm_mlx.kernels.mlstm_chunkwise_cuda", _chunkwise), ("xlstm_mlx.kernels.embedding", _embedding),
          ("xlstm_mlx.kernels.mlstm_decode", _decode_step), ("xlstm_mlx.kernels.headnorm", _headnorm),
          ("xlstm_mlx.kernels.add_rms_norm", _add_rms), ("xlstm_mlx.kernels.swiglu", _swiglu),
          ("xlstm_mlx.kernels.quant_gemv", _quant_gemv), ("xlstm_mlx.kernels.bf16_gemv", _bf16_gemv),
          ("xlstm_mlx.kernels.gate_preact", _gate_preact)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--show", help="print the generated source of kernels whose name contains this")
    p.add_argument("--resources", action="store_true",
                   help="compile to sm_90 SASS and print ptxas' registers, spills and shared memory per kernel")
    args = p.parse_args()
    mx.set_default_device(mx.cpu)
    failed = 0
    with nvrtc_kernels(args.show, args.resources) as log:
        for label, thunk in _checks():
            try:
                thunk()
            except Exception as e:  # a wrapper that fails before its kernel is a failure too
                log.compiled.append((label, False, f"wrapper raised {type(e).__name__}: {e}"))
    for key, ok, msg in log.compiled:
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {key}")
        if msg and not ok:
            print(msg)
        elif ok and args.resources:
            for line in msg.splitlines():
                if "registers" in line or "spill" in line:
                    print("      " + line.split(":", 1)[-1].strip().removeprefix("ptxas").strip(" ."))
    print(f"{len(log.compiled) - failed} compiled, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
