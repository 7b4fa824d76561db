"""Small file helpers every layer shares, the profiler included: atomic writes and tolerant JSON reads.

This module and `greenkd.errors` are the only parts of greenkd that `profilers/`
imports (the import contracts in pyproject.toml say so), so it imports nothing
from greenkd and nothing heavy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text to a temp file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one temp name per process: two writers of the same file never share a temp file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """`payload` as indented JSON, written atomically (see `write_text_atomic`)."""
    write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from disk, or None if the file is missing, not whole, or not an object."""
    try:
        payload = json.loads(Path(path).read_text())
    except (FileNotFoundError, IsADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None
