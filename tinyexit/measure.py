"""Instruction counts of models on an emulated core: the cost model of target-driven calibration (manifest
`cost.instructions[target]`) and of exit placement. Below pipeline, place and calibrate: it imports only
the firmware build, the simulator and the executors, so place prices candidates without importing pipeline.

Each model is built here (the object cache makes repeated builds cheap) and run as one shard of
`tinyexit.sim.run_shard` on an executor (tinyexit.cluster): local threads, or a Dask cluster. Several models
are priced side by side, one shard each.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

REPRESENTATIVE_SAMPLES = 500  # training samples that calibrate int8 post-training quantization
MEASURE_SAMPLES = 20  # the kernels take the same path for every input (HAR, KWS: identical counts); an average guards


def keras_verbosity() -> int:
    """Live progress bars on a terminal, one line per epoch in logs and CI."""
    import sys

    return 1 if sys.stdout.isatty() else 2


def measure_many(models: Sequence[tuple[Path, np.ndarray]], target: str, samples: int = MEASURE_SAMPLES,
                 executor=None) -> list[dict]:
    """Each (model, int8 inputs)'s stage instruction counts on `target` with every early exit off, averaged
    over the first `samples` inputs (at most 20: sim's no-exit pass), in the order given. A model is an export
    folder or a plain `.tflite` (one stage, no exits). executor: tinyexit.cluster (default: local threads, one
    per core)."""
    from tinyexit.cluster import LocalExecutor
    from tinyexit.firmware_build import build
    from tinyexit.sim import run_shard

    executor = executor or LocalExecutor()
    with tempfile.TemporaryDirectory() as tmp:
        binaries = [build(Path(path), target, Path(tmp) / str(k)).binary for k, (path, _) in enumerate(models)]
        # no sample through the exit policy; the first `samples` through the no-exit pass
        shards = [(target, binary, [x_q[:0]], False, [x_q[:samples]], False)
                  for binary, (_, x_q) in zip(binaries, models)]
        done = executor.map(run_shard, shards)
    return [_counts(info, full_runs) for info, _, full_runs, _ in done]


def _counts(info: dict, full_runs: list) -> dict:
    stage = np.mean([r.stage_cycles for r in full_runs], axis=0)
    return {"unit": info["cycle_unit"], "samples": len(full_runs), "stage": stage.round(1).tolist(),
            "to_exit": np.cumsum(stage).round(1).tolist()}


def measure_instructions(model_path: Path, target: str, x_q: np.ndarray, samples: int = MEASURE_SAMPLES,
                         executor=None) -> dict:
    """One model's counts (see measure_many): {unit, samples, stage: per stage, to_exit: cumulative}."""
    return measure_many([(Path(model_path), x_q)], target, samples, executor)[0]
