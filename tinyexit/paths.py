"""Where data, caches and outputs live by default."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def shared_datasets() -> Path:
    """The shared dataset folder: $TINYEXIT_DATASETS, else ../shared/datasets beside the project."""
    env = os.environ.get("TINYEXIT_DATASETS")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "datasets"


def cache_dir() -> Path:
    """Cache for derived data (windows, features): $TINYEXIT_CACHE, else ~/.cache/tinyexit."""
    env = os.environ.get("TINYEXIT_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "tinyexit"
    path.mkdir(parents=True, exist_ok=True)
    return path
