"""The files that let mlx-lm run a converted directory by itself (`xlstm-mlx convert --mlx-lm`).

mlx-lm 0.32 builds a model from `mlx_lm.models.<model_type>` unless config.json names a `model_file`: then, with
`--trust-remote-code` (`trust_remote_code=True` in Python), it executes that file from the model directory and
takes its `Model` and `ModelArgs`. The file written here takes them from the installed xlstm-mlx package
(xlstm_mlx.integrations.mlx_lm, the same adapter `import xlstm_mlx.integrations.mlx_lm` registers), so

    mlx_lm.generate --model DIR --trust-remote-code --prompt "..."

works in any environment where xlstm-mlx is installed, without importing it first. The model code itself is not
copied into the directory: it lives in one place, and the file is a few lines anyone can read before trusting it.

config.json gets `model_file` (and, for an official stack whose own config is xlstm_config.json, a config.json
is written with that config and `model_type: xlstm_official_stack`: mlx-lm reads only config.json).
"""

from __future__ import annotations

import json
from pathlib import Path

MODEL_FILE = "xlstm_mlx_model.py"

_SOURCE = '''"""mlx-lm model code for this xLSTM checkpoint (config.json "model_file"), written by `xlstm-mlx convert --mlx-lm`.

mlx-lm runs it with --trust-remote-code; the model is xlstm-mlx's own (xlstm_mlx.integrations.mlx_lm), so
xlstm-mlx must be installed where mlx-lm runs: pip install xlstm-mlx (mlx-lm {versions}).
"""

try:
    from xlstm_mlx.integrations.mlx_lm import Model, ModelArgs  # noqa: F401
except ImportError as e:  # a clear message instead of a bare ModuleNotFoundError
    raise ImportError("this checkpoint's model code is in the xlstm-mlx package, which is not importable here: "
                      "pip install xlstm-mlx (" + str(e) + ")") from e
'''


def write_mlx_lm_files(out: Path, config_name: str, config: dict) -> list[Path]:
    """Write MODEL_FILE into `out` and name it in config.json (written next to `config_name` when that is another
    file). `config` is what `config_name` holds; returns the files written."""
    from xlstm_mlx.integrations.mlx_lm import MLX_LM_VERSIONS

    out = Path(out)
    (out / MODEL_FILE).write_text(_SOURCE.format(versions=MLX_LM_VERSIONS))
    cfg = dict(config)
    if config_name != "config.json":  # the official stack keeps its own config; mlx-lm needs config.json
        cfg.setdefault("model_type", "xlstm_official_stack")
    cfg["model_file"] = MODEL_FILE
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return [out / MODEL_FILE, out / "config.json"]
