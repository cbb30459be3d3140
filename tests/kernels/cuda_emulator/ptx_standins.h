// Host stand-ins for the warp-level PTX our kernels reach through their own wrappers (ldmatrix, mma.sync), with
// the PTX ISA's documented semantics: lanes exchange addresses or registers through per-lane buffers between two
// warp barriers. Shared by both CPU harnesses (cuda_emulator/emu.h and host_cuda.py); the includer defines
// `threadIdx` (thread_local) and `host_syncwarp()` first. Up to 1024 threads a block.
#pragma once
#include <cstdint>
#include <cstring>

inline const void* g_ptx_rows[1024];
inline uint64_t g_ptx_regs[1024 * 8];

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8j..8j+7 give the rows of matrix j (16 bytes each); lane t
// receives in r[j] the 32-bit word t % 4 of row t / 4 of matrix j
inline void host_ldmatrix_x4(unsigned int* r, const void* row) {
    const int w = threadIdx.x / 32, l = threadIdx.x % 32;
    g_ptx_rows[w * 32 + l] = row;
    host_syncwarp();
    for (int j = 0; j < 4; ++j)
        std::memcpy(&r[j], static_cast<const char*>(g_ptx_rows[w * 32 + 8 * j + l / 4]) + 4 * (l % 4), 4);
    host_syncwarp();
}
// the same with .trans: lane t receives in r[j] the b16 elements (row 2 (t % 4), column t / 4) in the low half and
// (row 2 (t % 4) + 1, column t / 4) in the high half of matrix j (rows as given by the lanes, columns their b16s)
inline void host_ldmatrix_x4_trans(unsigned int* r, const void* row) {
    const int w = threadIdx.x / 32, l = threadIdx.x % 32;
    g_ptx_rows[w * 32 + l] = row;
    host_syncwarp();
    for (int j = 0; j < 4; ++j) {
        uint16_t lo, hi;
        std::memcpy(&lo, static_cast<const char*>(g_ptx_rows[w * 32 + 8 * j + 2 * (l % 4)]) + 2 * (l / 4), 2);
        std::memcpy(&hi, static_cast<const char*>(g_ptx_rows[w * 32 + 8 * j + 2 * (l % 4) + 1]) + 2 * (l / 4), 2);
        r[j] = unsigned(lo) | (unsigned(hi) << 16);
    }
    host_syncwarp();
}
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, the PTX ISA's fragment layouts (g = lane / 4,
// c = lane % 4): A a[0]: (row g, k 2c, 2c+1), a[1]: (g+8, 2c..), a[2]: (g, 2c+8, 2c+9), a[3]: (g+8, 2c+8..);
// B b[0]: (k 2c, 2c+1; column g), b[1]: (k 2c+8, 2c+9; column g); C/D e: (row g + 8 (e / 2), column 2c + e % 2);
// the lower-indexed element of a pair in the low 16 bits. Products of bf16 are exact in float; summed in order.
// d may be c.
inline void host_mma_16816(float* d, const unsigned int* a, const unsigned int* b, const float* c) {
    const int w = threadIdx.x / 32, l = threadIdx.x % 32;
    uint64_t* mine = &g_ptx_regs[(w * 32 + l) * 8];
    for (int i = 0; i < 4; ++i) mine[i] = a[i];
    mine[4] = b[0];
    mine[5] = b[1];
    host_syncwarp();
    auto half = [](uint64_t reg, int k) {
        const uint32_t u = uint32_t(uint16_t(reg >> (16 * (k & 1)))) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    };
    auto A = [&](int row, int k) {
        return half(g_ptx_regs[(w * 32 + 4 * (row % 8) + (k % 8) / 2) * 8 + (row >= 8) + 2 * (k >= 8)], k);
    };
    auto B = [&](int k, int col) { return half(g_ptx_regs[(w * 32 + 4 * col + (k % 8) / 2) * 8 + 4 + (k >= 8)], k); };
    float out[4];
    for (int e = 0; e < 4; ++e) {
        const int row = l / 4 + 8 * (e / 2), col = 2 * (l % 4) + e % 2;
        float s = c[e];
        for (int k = 0; k < 16; ++k) s += A(row, k) * B(k, col);
        out[e] = s;
    }
    host_syncwarp();
    for (int e = 0; e < 4; ++e) d[e] = out[e];
}
