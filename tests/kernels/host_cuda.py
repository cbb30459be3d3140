"""Run an mx.fast.cuda_kernel source unchanged on the CPU: a host C++ build with stand-ins for the CUDA built-ins.

CPU CI has no GPU, so a CUDA kernel's own source would otherwise go unexecuted there. This builds the kernel body
the way MLX's CUDA backend wraps it (inputs `const T* name` with `name_shape` where the source uses it, the
template arguments as constexpr constants, the output last), compiles it with the host C++ compiler (C++20) and
runs every CUDA thread of a block as a std::thread: __syncthreads is a block barrier, __shfl_xor_sync an exchange
through memory between two warp barriers, __shared__ arrays are statics (blocks run one after another), loads
through the cache hints are plain loads. Index arithmetic, bit unpacking, unrolled loops, tails and the block
reduction therefore run exactly as written; only timing and the hardware's float contraction can differ
(fmaf is std::fmaf here, a single rounding as on the GPU). A kernel that uses PTX (kernels/quant_gemv.py) calls
it through wrappers whose host side is here, with the PTX ISA's documented semantics: host_cp_async16 (a copy
that lands at once), host_ldmatrix_x4 (lanes exchange row addresses), host_mma_16816 (mma.sync m16n8k16 bf16 ->
float32 by its fragment layouts: lanes exchange their registers), host_syncwarp; so the host run checks the
kernel's own fragment bookkeeping against that reading of the ISA (not the hardware itself).

    available()                     whether a C++20 host compiler is there (else the tests skip)
    run(source, header, inputs, output, constants, blocks, threads)   -> the output as a numpy array
    nvcc_available() / device_build(source, header, inputs, output, constants, arch)
                                    the same wrapper compiled for the GPU by nvcc (where CUDA's compiler is
                                    installed, no GPU needed): the device intrinsics' overloads and types, and
                                    ptxas' registers and spills (returned as text)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

STANDINS = Path(__file__).resolve().parent / "cuda_emulator"  # ptx_standins.h, shared with emu.h

_STUBS = r"""
#include <algorithm>
#include <array>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
#define __device__
#define __forceinline__ inline
#define __global__
#define __shared__ static
#define __grid_constant__
struct uint4 { unsigned int x, y, z, w; };
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
struct float2 { float x, y; };
struct __nv_bfloat16 { uint16_t v; };
struct __nv_bfloat162 { __nv_bfloat16 x, y; };
inline float __bfloat162float(__nv_bfloat16 h) {
    const uint32_t u = uint32_t(h.v) << 16; float f; std::memcpy(&f, &u, 4); return f;
}
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {__bfloat162float(h.x), __bfloat162float(h.y)}; }
inline __nv_bfloat16 __float2bfloat16(float f) {  // round to nearest even, as the CUDA intrinsic
    uint32_t u; std::memcpy(&u, &f, 4);
    if (std::isnan(f)) return {uint16_t(0x7FC0)};
    u += 0x7FFFu + ((u >> 16) & 1u);
    return {uint16_t(u >> 16)};
}
inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16(a), __float2bfloat16(b)}; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldg(const T* p) { return *p; }
using std::min;
using std::max;
using std::fmaf;
struct dim3 { unsigned x = 0, y = 0, z = 0; };
thread_local dim3 threadIdx;
dim3 blockIdx;
std::barrier<>* g_block_bar;
std::vector<std::barrier<>*> g_warp_bar;
std::vector<float> g_xbuf;
inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int o) {
    const int w = threadIdx.x / 32, l = threadIdx.x % 32;
    g_xbuf[w * 32 + l] = v;
    g_warp_bar[w]->arrive_and_wait();
    const float r = g_xbuf[w * 32 + (l ^ o)];
    g_warp_bar[w]->arrive_and_wait();
    return r;
}
using Shape = std::array<int32_t, 8>;
// the PTX a kernel reaches through its own wrappers (kernels/quant_gemv.py), with their documented semantics
#define __align__(n) __attribute__((aligned(n)))
struct uint2 { unsigned int x, y; };
inline unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {  // selector nibbles: bytes of y:x
    const uint64_t v = (uint64_t(y) << 32) | x;
    unsigned int r = 0;
    for (int i = 0; i < 4; ++i) r |= unsigned((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xFFu) << (8 * i);
    return r;
}
inline void host_syncwarp() { g_warp_bar[threadIdx.x / 32]->arrive_and_wait(); }
inline void host_cp_async16(void* dst, const void* src) { std::memcpy(dst, src, 16); }  // lands at once
#include "ptx_standins.h"  // host_ldmatrix_x4, host_mma_16816
"""

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.uint32): "uint32_t", np.dtype(np.int32): "int32_t"}


def _compiler() -> str | None:
    return shutil.which("g++") or shutil.which("clang++")


def available() -> bool:
    """A host C++ compiler that builds the stubs (C++20 std::barrier)."""
    cxx = _compiler()
    if cxx is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "probe.cpp"
        src.write_text(_STUBS + "int main() { std::barrier<> b(1); b.arrive_and_wait(); return 0; }\n")
        r = subprocess.run([cxx, "-std=c++20", "-pthread", "-I", str(STANDINS), str(src), "-o",
                            str(Path(d) / "probe")], capture_output=True)
        return r.returncode == 0


def nvcc_available() -> bool:
    return shutil.which("nvcc") is not None


def _consts(constants: dict) -> str:
    return "".join(f"  using {k} = {v};\n" if isinstance(v, str) else
                   f"  constexpr bool {k} = {'true' if v else 'false'};\n" if isinstance(v, bool) else
                   f"  constexpr int {k} = {int(v)};\n" for k, v in constants.items())


def device_build(source: str, header: str, inputs: list[tuple[str, np.ndarray, bool]], output: tuple[str, int, bool],
                 variants: list[dict], arch: str = "sm_90") -> list[str]:
    """Compile the kernel as MLX's CUDA backend wraps it (a __global__ function, shapes as __grid_constant__
    arrays), once per set of template constants in `variants`, in one nvcc run for `arch`; raises with the
    compiler's message on an error, returns ptxas' report of each variant."""
    params = []
    for name, a, bf16 in inputs:
        params.append(f"const {_ctype(a, bf16)}* {name}")
        if f"{name}_shape" in source:
            params.append(f"const __grid_constant__ Shape {name}_shape")
    oname, _, obf16 = output
    params.append(f"{'__nv_bfloat16' if obf16 else 'float'}* {oname}")
    prog = "#include <cuda/std/array>\n#include <cstdint>\nusing Shape = cuda::std::array<int32_t, 10>;\n" + header
    for i, constants in enumerate(variants):
        prog += f"\n__global__ void variant{i}_({', '.join(params)}) {{\n{_consts(constants)}\n{source}\n}}\n"
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "k.cu").write_text(prog)
        r = subprocess.run(["nvcc", "-std=c++17", f"-arch={arch}", "-c", str(Path(d) / "k.cu"), "-o",
                            str(Path(d) / "k.o"), "-Xptxas", "-v"], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"nvcc failed:\n{r.stderr[:4000]}")
    reports, current = {}, None
    for line in r.stderr.splitlines():
        m = re.search(r"variant(\d+)_", line)
        if m and "Compiling entry function" in line:
            current = int(m.group(1))
            reports[current] = ""
        elif current is not None:
            reports[current] += line + "\n"
    return [reports.get(i, "") for i in range(len(variants))]


def _ctype(a: np.ndarray, bf16: bool) -> str:
    return "__nv_bfloat16" if bf16 else _CTYPES[a.dtype]


def run(source: str, header: str, inputs: list[tuple[str, np.ndarray, bool]], output: tuple[str, int, bool],
        constants: dict, blocks: int, threads: int) -> np.ndarray:
    """Execute `source` for `blocks` blocks of `threads` threads. inputs: (name, array, is_bf16) with bf16 arrays
    passed as their uint16 bits; output: (name, element count, is_bf16); constants: template arguments (int,
    bool, or a C type name string for a `using`). Returns the output (uint16 bits where bf16)."""
    cxx = _compiler()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        params, reads, args = [], [], []
        for i, (name, a, bf16) in enumerate(inputs):
            a = np.ascontiguousarray(a)
            ct = _ctype(a, bf16)
            (d / f"in{i}.bin").write_bytes(a.tobytes())
            params.append(f"const {ct}* {name}")
            reads.append(f'auto v{i} = rd<{ct}>("{d}/in{i}.bin", {a.size});')
            args.append(f"v{i}.data()")
            if f"{name}_shape" in source:
                params.append(f"const Shape {name}_shape")
                dims = ", ".join(str(s) for s in a.shape)
                reads.append(f"Shape s{i}{{{dims}}};")
                args.append(f"s{i}")
        oname, osize, obf16 = output
        oct_ = "__nv_bfloat16" if obf16 else "float"
        params.append(f"{oct_}* {oname}")
        consts = _consts(constants)
        prog = (_STUBS + header.replace("#include <cuda_bf16.h>", "") +
                f"\nvoid kernel({', '.join(params)}) {{\n{consts}\n{source}\n}}\n" + f"""
template <class V> std::vector<V> rd(const char* p, size_t n) {{
    std::vector<V> v(n); FILE* f = fopen(p, "rb"); if (fread(v.data(), sizeof(V), n, f) != n) std::abort();
    fclose(f); return v;
}}
int main() {{
    {' '.join(reads)}
    std::vector<{oct_}> out({osize});
    g_xbuf.resize(({threads} + 31) / 32 * 32);
    for (int blk = 0; blk < {blocks}; ++blk) {{
        blockIdx.x = blk;
        std::barrier<> bb({threads});
        g_block_bar = &bb;
        for (int i = 0; i < ({threads} + 31) / 32; ++i) g_warp_bar.push_back(new std::barrier<>(32));
        std::vector<std::thread> th;
        for (int t = 0; t < {threads}; ++t)
            th.emplace_back([&, t] {{ threadIdx.x = t; kernel({', '.join(args)}, out.data()); }});
        for (auto& t : th) t.join();
        for (auto* b : g_warp_bar) delete b;
        g_warp_bar.clear();
    }}
    FILE* f = fopen("{d}/out.bin", "wb"); fwrite(out.data(), sizeof({oct_}), out.size(), f); fclose(f);
    return 0;
}}
""")
        (d / "k.cpp").write_text(prog)
        r = subprocess.run([cxx, "-std=c++20", "-O1", "-Wno-unknown-pragmas", "-pthread", "-I", str(STANDINS),
                            str(d / "k.cpp"), "-o", str(d / "k")], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"host build of the kernel failed:\n{r.stderr[:4000]}")
        subprocess.run([str(d / "k")], check=True, timeout=300)
        return np.fromfile(d / "out.bin", dtype=np.uint16 if obf16 else np.float32)
