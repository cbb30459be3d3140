"""The demo model bundled with the package: a 6.1M-parameter xLSTM trained on Shakespeare by
`xlstm-mlx train` (docs/demo_model.md says how, and what it scores). `xlstm-mlx generate` uses it
when no --model is given."""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "demo_model"
DEMO_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
DEMO_LABEL = ("NOTE: no --model given; using the bundled demo model (6.1M-parameter xLSTM trained on "
              "Shakespeare's works; it writes pseudo-Shakespeare, nothing more)")


def demo_model_dir() -> Path | None:
    """The bundled model's directory, or None when the package was installed without it."""
    if all((DEMO_MODEL_DIR / f).is_file() for f in DEMO_FILES):
        return DEMO_MODEL_DIR
    return None
