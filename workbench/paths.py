"""Where genwb keeps files outside run folders: ``$GENWB_CACHE`` or ``~/.cache/genwb``."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("GENWB_CACHE") or Path.home() / ".cache" / "genwb")
