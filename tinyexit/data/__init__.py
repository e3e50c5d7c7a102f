"""Dataset loaders: official layouts in, model-ready arrays out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Split:
    x: np.ndarray  # float32, model input layout (N, H, W, C)
    y: np.ndarray  # int64 class indices
    groups: np.ndarray  # subject / speaker id per sample
    # training-time augmentation: (sample indices, rng) -> augmented inputs for those samples
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int, seed: int = 0) -> "Split":
        """A random subset of at most n samples (for quick runs); augmentation follows the samples."""
        if n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        augment = None if self.augment is None else (lambda i, rng: self.augment(idx[i], rng))
        return Split(self.x[idx], self.y[idx], self.groups[idx], augment)


@dataclass
class Dataset:
    task: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    preprocessing: dict = field(default_factory=dict)  # what turns raw data into `x` (goes in the manifest)


def load(task: str, path: str | None = None) -> Dataset:
    if task == "har":
        from tinyexit.data.har import load_har

        return load_har(path)
    if task == "kws":
        from tinyexit.data.kws import load_kws

        return load_kws(path)
    if task == "vww":
        from tinyexit.data.vww import load_vww

        return load_vww(path)
    if task == "custom":
        from tinyexit.data.arrays import load_arrays

        return load_arrays(path)
    from tinyexit.errors import TinyexitError

    raise TinyexitError(f"unknown task '{task}' (known: har, kws, vww, custom)")
