"""Numerics profiles: every setting that defines a run, in one place, selectable by name.

A profile fixes the compute dtype of the weights, the dtype of q/k/v inside the mLSTM kernels, the
dtype of the residual stream and of the lm_head (float32 in every shipped profile: see
docs/numerics.md), the
recurrent state dtype (float32; float64 only in the all-float64 `exact` profile), the chunk size of the prefill, which
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
DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16, "float64": mx.float64}
DTYPE_FIELDS = ("compute_dtype", "kernel_dtype", "residual_dtype", "head_dtype", "state_dtype")


def float64_device_error(name: str) -> UsageError | None:
    """The error for running a float64 profile here, or None: MLX computes float64 on the CPU only."""
    if mx.default_device().type == mx.cpu:
        return None
    return UsageError(f"profile {name!r} computes in float64, which MLX supports on the CPU only (this run's "
                      f"device is {mx.default_device()}); call mx.set_default_device(mx.cpu) before loading "
                      "(`xlstm-mlx drift` does), or pick 'parity' (float32) on the GPU")


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
        for field in DTYPE_FIELDS[:4]:
            if getattr(self, field) not in DTYPES:
                raise UsageError(f"profile {self.name!r}: {field} must be one of {sorted(DTYPES)}, "
                                 f"got {getattr(self, field)!r}")
        if self.state_dtype not in ("float32", "float64"):
            raise UsageError(f"profile {self.name!r}: state_dtype must be 'float32' (got {self.state_dtype!r}); "
                             "the exponential-gating stabilizer m is lost in lower precision")
        wide = [f for f in DTYPE_FIELDS if getattr(self, f) == "float64"]
        if wide and len(wide) != len(DTYPE_FIELDS):
            # float64 is the exact profile's oracle arithmetic: mixing it with narrower dtypes would be
            # neither an oracle nor fast
            raise UsageError(f"profile {self.name!r}: float64 is all or nothing (it is the 'exact' profile's "
                             f"reference arithmetic); {wide} are float64 but "
                             f"{[f for f in DTYPE_FIELDS if f not in wide]} are not. Use --profile exact "
                             "without --dtype, or a float32/bfloat16 profile")
        if wide and float64_device_error(self.name) is not None:
            raise float64_device_error(self.name)
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

    @property
    def mx_state_dtype(self):
        """dtype of the gates, recurrent state and logits: float32, float64 in the exact profile."""
        return DTYPES[self.state_dtype]

    @property
    def exact(self) -> bool:
        """True for the all-float64 profile (CPU only): the in-engine oracle."""
        return self.state_dtype == "float64"

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
    """A shipped profile by name ('parity', 'fast', 'exact') or a JSON file path."""
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
    if dtype not in DTYPES or dtype == "float64":
        raise UsageError(f"dtype must be one of {sorted(set(DTYPES) - {'float64'})}, got {dtype!r}; "
                         "for float64 use the profile 'exact' (CPU only)")
    return base.replace(compute_dtype=dtype, kernel_dtype=dtype)
