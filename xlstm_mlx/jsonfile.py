"""Reading the JSON files of a checkpoint (config.json, xlstm_config.json, indexes) with errors that name them."""

from __future__ import annotations

import json
from pathlib import Path

from xlstm_mlx.errors import CheckpointError


def read_json_object(path: Path) -> dict:
    """The JSON object in `path`; a CheckpointError naming the file if it is unreadable, not JSON, or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); fix or re-download it") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object ({{...}}) but found {type(data).__name__}; "
                              "fix or re-download it")
    return data
