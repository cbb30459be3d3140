"""The demo model bundled with the package: a 6.1M-parameter xLSTM trained on Shakespeare by
`xlstm-mlx train` (docs/demo_model.md says how, and what it scores). The CLI uses it when no --model is
given; from Python, `xlstm_mlx.load(demo_model_dir())`."""

from __future__ import annotations

import tempfile
from pathlib import Path

DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "demo_model"
DEMO_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
DEMO_LABEL = ("NOTE: no --model given; using the bundled demo model (6.1M-parameter xLSTM trained on "
              "Shakespeare's works; it writes pseudo-Shakespeare, nothing more)")
# The CLI's default for greedy runs (--temp 0) of the bundled model when --repetition-penalty is not given: its
# plain greedy output loops within 60 tokens ("FALSTAFF. I will not say so." twice); a penalty of 1.2 over the
# last 20 tokens keeps greedy decoding deterministic and reads like a scene (docs/demo_model.md). Sampled runs
# (--temp > 0) are left as given.
DEMO_REPETITION_PENALTY = 1.2
RANDOM_LABEL = "NOTE: no --model given; using a tiny RANDOM-WEIGHT model created on the fly (its output is noise)"


def demo_model_dir() -> Path | None:
    """The bundled model's directory, or None when the package was installed without it."""
    if all((DEMO_MODEL_DIR / f).is_file() for f in DEMO_FILES):
        return DEMO_MODEL_DIR
    return None


def default_model_dir() -> tuple[Path, str]:
    """The model used when --model is not given, with a label saying what it is."""
    if demo_model_dir() is not None:
        return demo_model_dir(), DEMO_LABEL
    d = Path(tempfile.gettempdir()) / "xlstm-mlx-random-tiny"
    if not (d / "model.safetensors").exists():
        from xlstm_mlx.checkpoints.random import make_random_checkpoint

        make_random_checkpoint(d, "tiny", seed=0)
    return d, RANDOM_LABEL


def model_or_default(path, stderr) -> Path | str:
    """`path`, or (when None) the default model, announced on `stderr`."""
    if path is not None:
        return path
    path, label = default_model_dir()
    print(label, file=stderr)
    return path
