"""Opt-in NaN/Inf locator: names the first block and sub-layer where a non-finite value appears.

Only runs when the model's `check_numerics` flag is set (load(..., check_numerics=True) or
`xlstm-mlx generate --check-numerics`); it forces evaluation after every sub-layer, so it is slow
and never on by default. With the flag off, the forward pass contains no extra work at all.
"""

import mlx.core as mx

from xlstm_mlx.errors import NumericsError


def assert_finite(where: str, *arrays) -> None:
    for a in arrays:
        if a is None:
            continue
        finite = mx.all(mx.isfinite(a)).item()
        if not finite:
            nan = mx.any(mx.isnan(a)).item()
            kind = "NaN" if nan else "Inf"
            raise NumericsError(
                f"first non-finite value ({kind}) at {where}, shape {tuple(a.shape)}, dtype {a.dtype}. "
                "If this run is bfloat16/float16, retry with --dtype float32 (or profile 'parity') to see "
                "whether it is a precision problem; see docs/troubleshooting.md"
            )
