// A small SIMT emulation of the CUDA subset our mx.fast.cuda_kernel sources use, for CPU tests of their indexing
// and synchronization (tests/kernels/cuda_emulator.py): one std::thread per CUDA thread, the blocks in turn.
// wmma fragments hold the whole 16x16 tile in every lane (the documented semantics, no element layout: the
// kernels never rely on one). Not a timing model; alignment of wmma pointers is checked.
#pragma once
#include <array>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstddef>
#include <thread>
#include <vector>
#include <algorithm>
#include <cstdio>
#include <cstdlib>

struct dim3_ { unsigned x = 0, y = 0, z = 0; };
inline thread_local dim3_ threadIdx, blockIdx;
inline dim3_ gridDim;  // the launch's grid (a persistent kernel's block loop; blocks run in turn: grid barriers only at 1)
inline std::barrier<>* g_block_bar = nullptr;
inline std::vector<std::barrier<>*> g_warp_bars;
inline float g_xbuf[64][32];

inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { g_warp_bars[threadIdx.x / 32]->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int o) {
    const int w = threadIdx.x / 32, l = threadIdx.x % 32;
    g_xbuf[w][l] = v;
    __syncwarp();
    const float r = g_xbuf[w][l ^ o];
    __syncwarp();
    return r;
}
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
// the blocks run one after another, their threads at once: a fence orders this thread's memory operations, and
// atomics are real ones (the tile counter of the fused decode-step norm)
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
template <class T> inline T __ldg(const T* p) { return *p; }
using std::min;
using std::max;
template <class T> inline void __stcs(T* p, T v) { *p = v; }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }

struct __nv_bfloat16 { uint16_t v; };  // the field name host_cuda.py's stub uses too
struct __nv_bfloat162 { __nv_bfloat16 x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
struct float2 { float x, y; };
struct alignas(8) uint2 { unsigned x, y; };
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {  // selector nibbles pick bytes of y:x
    const uint64_t v = (uint64_t(y) << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= unsigned((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xFFu) << (8 * i);
    return r;
}
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float __bfloat162float(__nv_bfloat16 h) { uint32_t u = uint32_t(h.v) << 16; float f; std::memcpy(&f, &u, 4); return f; }
inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u; std::memcpy(&u, &f, 4);
    if (std::isnan(f)) return {uint16_t(0x7fc0)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return {uint16_t(u >> 16)};
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16(a), __float2bfloat16(b)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {__bfloat162float(h.x), __bfloat162float(h.y)}; }

namespace nvcuda { namespace wmma {
struct row_major {}; struct col_major {}; struct matrix_a {}; struct matrix_b {}; struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static constexpr int num_elements = 256;
    T x[256];
};
inline void check_align(const void* p) {
    if (reinterpret_cast<uintptr_t>(p) % 32) { fprintf(stderr, "wmma pointer %p not 32-byte aligned\n", p); abort(); }
}
inline float tof(float v) { return v; }
inline float tof(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class Use, class T> void load_matrix_sync(fragment<Use, 16, 16, 16, T, row_major>& f, const T* p, unsigned ldm) {
    check_align(p);
    for (int r = 0; r < 16; ++r) for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = p[r * ldm + c];
}
template <class Use, class T> void load_matrix_sync(fragment<Use, 16, 16, 16, T, col_major>& f, const T* p, unsigned ldm) {
    check_align(p);
    for (int r = 0; r < 16; ++r) for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = p[c * ldm + r];
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t l) {
    check_align(p);
    for (int r = 0; r < 16; ++r) for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
    check_align(p);
    if (threadIdx.x % 32 != 0) return;   // one lane writes; the kernels __syncwarp before reading
    for (int r = 0; r < 16; ++r) for (int c = 0; c < 16; ++c) (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * 16 + c];
}
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) { for (auto& e : f.x) e = v; }
template <class LA, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA>& a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
    float out[256];
    for (int r = 0; r < 16; ++r) for (int j = 0; j < 16; ++j) {
        float s = c.x[r * 16 + j];
        for (int k = 0; k < 16; ++k) s += tof(a.x[r * 16 + k]) * tof(b.x[k * 16 + j]);
        out[r * 16 + j] = s;
    }
    std::memcpy(d.x, out, sizeof out);
}
}}  // namespace nvcuda::wmma

// ldmatrix / mma.sync for kernels that use them through cuda_common.MMA_HEADER's wrappers
inline void host_syncwarp() { __syncwarp(); }
inline void host_cp_async16(void* dst, const void* src) { std::memcpy(dst, src, 16); }  // lands at once
#include "ptx_standins.h"

template <class F> void emu_launch(int blocks, int threads, F&& body) {
    std::barrier<> bb(threads);
    std::vector<std::barrier<>*> wb;
    for (int w = 0; w < threads / 32; ++w) wb.push_back(new std::barrier<>(32));
    g_block_bar = &bb;
    g_warp_bars = wb;
    gridDim.x = unsigned(blocks);
    for (int b = 0; b < blocks; ++b) {
        std::vector<std::thread> ts;
        for (int t = 0; t < threads; ++t) ts.emplace_back([&, b, t] { blockIdx.x = b; threadIdx.x = t; body(); });
        for (auto& t : ts) t.join();
    }
    for (auto* w : wb) delete w;
}
