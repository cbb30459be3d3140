"""Writing files so that nothing is ever half-written, and checking output paths before long work starts.

Every file the project writes for the user (checkpoints, state snapshots, JSON results, converted models) goes
to a temporary name in the destination's directory first and is put in place with os.replace, which is atomic
on POSIX and Windows within one file system: an interruption, a full disk or a crash leaves either the old file
or the new one, never a truncated mix. Directories are built beside their destination and renamed in.

`check_writable(path)` is called before a prefill, a benchmark or a training run, so a typo in an output path
costs nothing instead of the whole run.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from xlstm_mlx.errors import UsageError


def _describe(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "no space left on the device; free some space or write elsewhere"
    return e.strerror or str(e)


def _check_parent(p: Path, what: str) -> Path:
    """The first existing directory above `p` (the ones below it would be created); a file there is an error."""
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{what} {p}: {parent} is a file, not a directory")
    return parent


def check_writable(path: str | Path, what: str = "output file") -> Path:
    """`path` can be written as a file (its directory exists or can be made, and is writable); else UsageError."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{what} {p} is a directory; give a file name")
    parent = _check_parent(p, what)  # the directories that would be created: the first existing one is probed
    try:  # a real probe: os.access says yes to root even on read-only file systems (/proc, a ro mount)
        fd, probe = tempfile.mkstemp(prefix=".xlstm-mlx-write-test.", dir=parent)
        os.close(fd)
        os.unlink(probe)
        if p.exists() and not os.access(p, os.W_OK):
            raise PermissionError(errno.EACCES, "permission denied")
    except OSError as e:
        raise UsageError(f"{what} {p} cannot be written ({_describe(e)}); choose another path") from None
    return p


@contextmanager
def replacing(path: str | Path, suffix: str = ""):
    """Yield a temporary path beside `path`; on success it replaces `path` atomically, on failure it is removed.

    `suffix` is kept at the end of the temporary name (mx.save_safetensors appends '.safetensors' otherwise).
    An OSError (permission, full disk) becomes a UsageError naming `path`.
    """
    p = Path(path).expanduser()
    _check_parent(p, "cannot write")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp" + suffix, dir=p.parent)
        os.close(fd)
    except OSError as e:
        raise UsageError(f"cannot write {p}: {_describe(e)}") from None
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; the result is an ordinary file
        os.replace(tmp, p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {p}: {_describe(e)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_safetensors(path: str | Path, tensors: dict, metadata: dict | None = None) -> Path:
    """mx.save_safetensors, atomically; a failure to write names the path (MLX raises a bare RuntimeError)."""
    import mlx.core as mx

    with replacing(path, suffix=".safetensors") as tmp:
        try:
            mx.save_safetensors(str(tmp), tensors, metadata=metadata)
        except RuntimeError as e:
            raise OSError(errno.EIO, f"writing failed ({e})") from None
    return Path(path)


@contextmanager
def staged_directory(out: str | Path):
    """Yield a fresh directory beside `out`; on success it takes `out`'s place (an existing `out` is removed
    only then), on failure it is deleted and `out` stays as it was."""
    out = Path(out).expanduser()
    _check_parent(out, "cannot write")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise UsageError(f"cannot write {out}: {_describe(e)}") from None
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should be an ordinary directory
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UsageError(f"cannot write {out}: {_describe(e)}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
