"""Numerics profiles: every setting that defines a run, in one place, selectable by name.

A profile fixes the compute dtype of the weights, the dtype of q/k/v inside the mLSTM kernels, the
dtype of the residual stream and of the lm_head (float32 in every shipped profile: see
docs/numerics.md), the
recurrent state dtype (float32 only), the chunk size of the prefill, which
kernels run, and optionally overrides the checkpoint's eps / norm_eps (null = keep the checkpoint's).
Shipped profiles live in profiles/*.json; a path to a JSON file of the same shape works too.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from xlstm_mlx.kernels import SEQUENCE_FORMS, STEP_FORMS
from xlstm_mlx.errors import UsageError

PROFILE_DIR = Path(__file__).parent / "profiles"
DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}


@dataclass(frozen=True)
class NumericsProfile:
    name: str
    compute_dtype: str = "float32"
    kernel_dtype: str = "float32"
    residual_dtype: str = "float32"
    head_dtype: str = "float32"
    state_dtype: str = "float32"
    chunk_size: int = 64
    prefill_kernel: str = "chunkwise"
    step_kernel: str = "step"
    eps: float | None = None
    norm_eps: float | None = None
    description: str = ""

    def __post_init__(self):
        for field in ("compute_dtype", "kernel_dtype", "residual_dtype", "head_dtype"):
            if getattr(self, field) not in DTYPES:
                raise UsageError(f"profile {self.name!r}: {field} must be one of {sorted(DTYPES)}, "
                                 f"got {getattr(self, field)!r}")
        if self.state_dtype != "float32":
            raise UsageError(f"profile {self.name!r}: state_dtype must be 'float32' (got {self.state_dtype!r}); "
                             "the exponential-gating stabilizer m is lost in lower precision")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise UsageError(f"profile {self.name!r}: chunk_size must be a positive integer, got {self.chunk_size!r}")
        if self.prefill_kernel not in SEQUENCE_FORMS:
            raise UsageError(f"profile {self.name!r}: prefill_kernel must be one of {sorted(SEQUENCE_FORMS)}")
        if self.step_kernel not in STEP_FORMS:
            raise UsageError(f"profile {self.name!r}: step_kernel must be one of {sorted(STEP_FORMS)}")

    @property
    def mx_compute_dtype(self):
        return DTYPES[self.compute_dtype]

    @property
    def mx_head_dtype(self):
        return DTYPES[self.head_dtype]

    @property
    def mx_residual_dtype(self):
        return DTYPES[self.residual_dtype]

    @property
    def mx_kernel_dtype(self):
        return DTYPES[self.kernel_dtype]

    def replace(self, **changes) -> "NumericsProfile":
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        return (f"profile={self.name} weights={self.compute_dtype} qkv={self.kernel_dtype} "
                f"residual={self.residual_dtype} head={self.head_dtype} "
                f"state={self.state_dtype} prefill={self.prefill_kernel}(chunk={self.chunk_size}) "
                f"decode={self.step_kernel}")


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def load_profile(name_or_path: str | NumericsProfile) -> NumericsProfile:
    """A shipped profile by name ('parity', 'fast') or a JSON file path."""
    if isinstance(name_or_path, NumericsProfile):
        return name_or_path
    path = Path(name_or_path)
    if not path.suffix == ".json":
        path = PROFILE_DIR / f"{name_or_path}.json"
    if not path.exists():
        raise UsageError(f"unknown numerics profile {name_or_path!r}; shipped profiles: "
                         f"{available_profiles()}, or give a path to a .json file")
    data = json.loads(path.read_text())
    known = {f.name for f in dataclasses.fields(NumericsProfile)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"profile {path}: unknown fields {unknown}; known fields are {sorted(known)}")
    data.setdefault("name", path.stem)
    return NumericsProfile(**data)


def default_profile(dtype: str | None = None) -> NumericsProfile:
    """bfloat16 ('fast') on a GPU, float32 ('parity') on CPU; `dtype` overrides the weight and q/k/v dtype."""
    base = load_profile("fast" if mx.default_device().type == mx.gpu else "parity")
    if dtype is None:
        return base
    if dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return base.replace(compute_dtype=dtype, kernel_dtype=dtype)
