"""Row tiles on the CPU: a row-local function (the FFN) applied to tiles of rows that fit the L2 cache, concatenated.

    row_tiles(fn, *xs, rows=None)      on MLX's CPU backend with more than `rows` rows (axis 0, the same number in
                                       every input): fn on near-equal tiles of the rows, concatenated; else fn(*xs)
    row_tiles_ref(fn, *xs, rows=None)  fn(*xs) (the reference)

fn must treat every row on its own (fn(*xs)[r] depends on row r of the inputs only): the SwiGLU and the head
norm with its output gate do; the mLSTM recurrence (over time) does not.

Why: MLX's CPU backend evaluates each op (and each kernel that mx.compile fuses) over the whole array before the
next one starts, on one thread. At the 64m shape's 512-token prefill the FFN's fused up-projection writes
512 x 2,816 float32 values (5.8 MB), and the fast SiLU (kernels/fastmath.py, eight JIT kernels: docs/bench.md
"session 9") reads and writes 512 x 1,408-value intermediates (2.9 MB each): none fits a core's L2 cache (2 MB on
the Sapphire Rapids VM), so every kernel streams through L3 or memory. MLX evaluates each input of a concatenate
in turn, so with tiles of 64 rows (the up-projection's output 720 KB, each intermediate 360 KB) a tile's whole
chain runs while its data sits in L2. Measured on the 2-core Xeon VM (2026-12-03, docs/bench.md): the SwiGLU of
512 rows 17 -> 9 ms, the whole FFN 54-55 -> 42-45 ms at one thread (alternating in one process).

Numerics: the tiles' rows are the same rows; an element's value depends on how its products are summed, which
does not change with the number of rows: each tile has at least `rows` / 2 > 8 rows (so no tile takes the
skinny few-row kernel, platform/skinny_sgemm.c), and the library's sgemm sums each element over K the same way
whatever M. One exception: the K-blocked library path keeps products whose C has <= 8,192 elements in one call
(docs/cpu-blas.md), so a tile of a narrow product (N < 256 at 32 rows) may be summed in one call where the whole
array was blocked; the result is then another float32 rounding of the same sum, within the same bound
(tests/kernels/test_row_tiles.py checks both cases against the reference and float64).
"""

from __future__ import annotations

import mlx.core as mx

from xlstm_mlx.kernels.fastmath import on_cpu

# rows per tile: 64 rows of the 64m FFN's up-projection output are 720 KB. 0 turns tiling off.
TILE_ROWS = 64


def row_tiles_ref(fn, *xs: mx.array, rows: int | None = None) -> mx.array:
    return fn(*xs)


def tiles(n: int, rows: int) -> list[tuple[int, int]]:
    """(start, stop) of ceil(n / rows) near-equal tiles of n rows (each at least rows / 2 long when n > rows)."""
    if rows <= 0 or n <= rows:
        return [(0, n)]
    count = -(-n // rows)
    size = -(-n // count)
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def applies(xs, rows: int) -> bool:
    n = xs[0].shape[0] if xs[0].ndim else 0
    return on_cpu() and rows > 0 and n > rows and all(x.ndim >= 1 and x.shape[0] == n for x in xs)


def row_tiles(fn, *xs: mx.array, rows: int | None = None) -> mx.array:
    """fn(*xs) computed on tiles of axis 0 (the rows; every input the same number of them), concatenated."""
    rows = TILE_ROWS if rows is None else rows
    if not applies(xs, rows):
        return fn(*xs)
    return mx.concatenate([fn(*(x[s:e] for x in xs)) for s, e in tiles(xs[0].shape[0], rows)], axis=0)


def label() -> str:
    if on_cpu() and TILE_ROWS > 0:
        return f"tiles of {TILE_ROWS} rows on the CPU (MLX ops on each tile, concatenated)"
    return "the whole array in one call (tiles only on MLX's CPU backend)"
