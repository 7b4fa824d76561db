"""Where greenkd keeps caches: `$GREENKD_CACHE`, else `~/.cache/greenkd`."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root (teachers, timing store); created on first use by its writers."""
    root = os.environ.get("GREENKD_CACHE")
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "greenkd"
