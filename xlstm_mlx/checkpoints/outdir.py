"""The output directory of `convert` and `convert-official`: never a model overwritten without --force."""

from __future__ import annotations

from pathlib import Path

from xlstm_mlx.errors import UsageError


def prepare_out(src: Path | None, out: Path, force: bool) -> None:
    """Refuse `out` if it is the source, a file, or a non-empty directory (unless `force` and it holds a model:
    a directory of other files is never deleted)."""
    if src is not None and out.resolve() == src.resolve():
        raise UsageError(f"--out {out} is the source directory; write the conversion somewhere else")
    if out.exists() and (out.is_file() or any(out.iterdir())):
        if not force:
            raise UsageError(f"{out} already exists; pass --force to replace it")
        if out.is_file() or not ((out / "config.json").exists() or (out / "xlstm_config.json").exists()
                                 or any(out.glob("*.safetensors"))):
            raise UsageError(f"{out} exists and is not a model directory (no config.json, no *.safetensors); "
                             "refusing to delete it even with --force")
