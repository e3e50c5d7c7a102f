"""Running inputs through a firmware build over the protocol, and summarising what came back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyexit.errors import TinyexitError
from tinyexit.policy import NEVER


def load_inputs(inputs: str, labels: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    def read(path: str, what: str) -> np.ndarray:
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise TinyexitError(f"{path}: cannot read {what} as .npy ({err})") from None

    x = read(inputs, "inputs")
    y = read(labels, "labels") if labels else None
    if y is not None and (y.ndim != 1 or len(y) != len(x)):
        raise TinyexitError(f"{labels}: expected {len(x)} labels, got shape {y.shape}")
    return x, y


def simulate(model: str | Path, target: str, x: np.ndarray, y: np.ndarray | None, build_dir: Path,
             progress: bool = True) -> tuple[dict, dict]:
    from tqdm import tqdm

    from tinyexit.firmware_build import build
    from tinyexit.harness import firmware

    fw = build(model, target, build_dir)
    if x.dtype != np.int8:
        raise TinyexitError(f"inputs are {x.dtype}; the model takes int8 (quantize them first)")
    if x.ndim < 2 or int(np.prod(x.shape[1:])) != fw.input_bytes:
        raise TinyexitError(f"inputs have shape {x.shape}; each must hold {fw.input_bytes} int8 values")
    n = len(x)
    pred, exits, cycles, outputs = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), []
    with firmware(target, fw.binary) as dev:
        info = dev.info()
        for i in tqdm(range(n), desc=f"{target} firmware", unit="sample", disable=not progress or n < 50, leave=False):
            r = dev.infer(x[i])
            pred[i], exits[i], cycles[i] = r.predicted_class, r.exit, sum(r.stage_cycles)
            outputs.append(r.output)
        # the no-exit path: every early exit switched off, on the first samples
        early = {e: NEVER for e in range(info["exits"] - 1)}
        if early:
            dev.set_policy(early)
        full = [sum(dev.infer(x[i], with_output=False).stage_cycles) for i in range(min(n, 20))]
    summary = {
        "n": n, "target": target, "cycle_unit": info["cycle_unit"],
        "accuracy": float((pred == y).mean()) if y is not None else None,
        "exit_histogram": np.bincount(exits, minlength=info["exits"]).tolist(),
        "mean_instructions": float(cycles.mean()) if n else 0.0,
        "macs_per_inference": int(info["macs"]),
        "instructions_per_mac": float(np.mean(full) / info["macs"]) if full else None,
        "instructions_no_exit": float(np.mean(full)) if full else None,
        "peak_activation_bytes": int(info["arena_bytes"]),
        "energy_uj": None,
    }
    result = {"pred": pred, "exit": exits, "instructions": cycles, "output": np.stack(outputs) if outputs else np.zeros((0,))}
    return result, summary


def table(s: dict) -> str:
    rows = [("samples", s["n"]), ("accuracy", f"{s['accuracy']:.2%}" if s["accuracy"] is not None else "-"),
            ("exit histogram", s["exit_histogram"]),
            (f"mean {s['cycle_unit']} per inference", f"{s['mean_instructions']:,.0f}"),
            (f"{s['cycle_unit']} without exits", f"{s['instructions_no_exit']:,.0f}" if s["instructions_no_exit"] else "-"),
            ("MACs per inference (all stages)", f"{s['macs_per_inference']:,}"),
            (f"{s['cycle_unit']} per MAC (no exit)", f"{s['instructions_per_mac']:.2f}" if s["instructions_per_mac"] else "-"),
            ("peak activation bytes", f"{s['peak_activation_bytes']:,}")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
