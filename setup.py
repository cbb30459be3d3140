"""The one compiled part of xlstm-mlx: the skinny-product cblas_sgemm for MLX's Linux CPU backend
(xlstm_mlx/platform/skinny_sgemm.c, docs/cpu-blas.md). Everything else is in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds, and the CPU BLAS set-up then
says (XLSTM_MLX_VERBOSE=1, `xlstm_mlx.platform.blas.info()`) that small-row products run OpenBLAS' sgemm.
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(Extension(
        "xlstm_mlx.platform._skinny_sgemm",
        sources=["xlstm_mlx/platform/skinny_sgemm.c"],
        depends=["xlstm_mlx/platform/skinny_kernel.h"],
        # -ffp-contract=off: a*b+c stays a multiply and an add. Contraction to FMA is the compiler's choice per
        # expression, and the kernel's two forms must round every element identically (skinny_kernel.h)
        extra_compile_args=["-O3", "-ffp-contract=off", "-fvisibility=default"],
        extra_link_args=["-pthread"],
        optional=True,
    ))

setup(ext_modules=ext_modules)
