"""Running inputs through a firmware build over the protocol, and summarising what came back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyexit.errors import TinyexitError
from tinyexit.policy import NEVER


def check_inputs(x: np.ndarray, input_bytes: int) -> None:
    if x.dtype != np.int8:
        raise TinyexitError(f"inputs are {x.dtype}; the model takes int8 (quantize them first)")
    if x.ndim < 2 or int(np.prod(x.shape[1:])) != input_bytes:
        raise TinyexitError(f"inputs have shape {x.shape}; each must hold {input_bytes} int8 values")


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """An output DEQUANTIZE as TFLite Micro computes it: float32(double(scale) * (q - zero_point))."""
    return (np.float64(np.float32(scale)) * (q.astype(np.int64) - zero_point)).astype(np.float32)


def run_samples(dev, x: np.ndarray | list[np.ndarray], y: np.ndarray | None, label: str, progress: bool = True,
                profile_layers: bool = False, outputs: list[dict] | None = None) -> tuple[dict, dict]:
    """Every input through a connected Device (harness.Device) with the firmware's own exit policy, then
    the no-exit path on the first samples (every early exit switched off: the device's policy is left
    that way). profile_layers: the first no-exit sample goes through PROFILE, giving per-layer cycles.
    x: (N, ...) or, for a model with several inputs, one such array per input. outputs: the model's outputs
    (codegen.describe_outputs) to collect every one of them as `output_<i>` in the result (one-stage models),
    dequantized where the model ends in DEQUANTIZE."""
    from tqdm import tqdm

    info = dev.info()
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    if len(xs) != len(info["input_sizes"]):
        raise TinyexitError(f"the model takes {len(info['input_sizes'])} inputs; {len(xs)} given")
    for a, size in zip(xs, info["input_sizes"]):
        check_inputs(a, size)
    n = len(xs[0])
    if any(len(a) != n for a in xs):
        raise TinyexitError(f"the inputs hold different numbers of samples ({', '.join(str(len(a)) for a in xs)})")
    every = outputs is not None and info["stages"] == 1
    pred, exits, cycles, logits = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), []
    collected: list[list[np.ndarray]] = [[] for _ in (outputs or [])]
    for i in tqdm(range(n), desc=f"{label} firmware", unit="sample", disable=not progress or n < 50, leave=False):
        r = dev.infer([a[i] for a in xs] if len(xs) > 1 else xs[0][i], all_outputs=every)
        pred[i], exits[i], cycles[i] = r.predicted_class, r.exit, sum(r.stage_cycles)
        logits.append(r.output)
        for j, got in enumerate(r.outputs or []):
            collected[j].append(got)
    # the no-exit path: every early exit switched off, on the first samples
    early = {e: NEVER for e in range(info["exits"] - 1)}
    if early:
        dev.set_policy(early)
    full, per_stage, layer_cycles = [], [], None
    for i in range(min(n, 20)):
        r = dev.infer([a[i] for a in xs] if len(xs) > 1 else xs[0][i], with_output=False,
                      profile=profile_layers and i == 0)
        full.append(sum(r.stage_cycles))
        per_stage.append(r.stage_cycles)
        layer_cycles = r.layer_cycles if r.layer_cycles is not None else layer_cycles
    summary = {
        "n": n, "target": label, "cycle_unit": info["cycle_unit"],
        "accuracy": float((pred == y).mean()) if y is not None else None,
        "exit_histogram": np.bincount(exits, minlength=info["exits"]).tolist(),
        "mean_instructions": float(cycles.mean()) if n else 0.0,
        "macs_per_inference": int(info["macs"]),
        "instructions_per_mac": float(np.mean(full) / info["macs"]) if full else None,
        "instructions_no_exit": float(np.mean(full)) if full else None,
        "stage_instructions": np.mean(per_stage, axis=0).tolist() if per_stage else None,  # each stage, no exits
        "peak_activation_bytes": int(info["arena_bytes"]),
        "energy_uj": None,
        "board": None,
    }
    result = {"pred": pred, "exit": exits, "instructions": cycles, "output": np.stack(logits) if logits else np.zeros((0,))}
    if every:
        for j, (desc, values) in enumerate(zip(outputs, collected)):
            q = np.stack(values).reshape(n, *desc["shape"][1:]) if values else np.zeros((0, *desc["shape"][1:]), np.int8)
            dq = desc.get("dequantize")
            result[f"output_{j}"] = dequantize(q, dq["scale"], dq["zero_point"]) if dq else q
    if profile_layers:
        result["layer_cycles"] = np.asarray(layer_cycles or [], np.int64)
    return result, summary


def add_energy(summary: dict, board) -> None:
    """energy_uj per mean inference from the board's datasheet power (tinyexit.boards), in place."""
    if board is None:
        return
    summary["board"] = board.name
    summary["energy_uj"] = board.energy_uj(summary["mean_instructions"])
    if summary["instructions_no_exit"]:
        summary["energy_uj_no_exit"] = board.energy_uj(summary["instructions_no_exit"])


def add_memory(summary: dict, fw, build_dir: Path, stack_bytes: int | None) -> None:
    """The build's memory report with the measured stack, in the summary and back into build.json."""
    from tinyexit.firmware_build import with_stack, write_memory_report

    if fw.memory:
        memory = with_stack(fw.memory, stack_bytes)
        write_memory_report(Path(build_dir) / "build.json", memory)
        summary["memory"] = memory
    summary["stack_bytes"] = stack_bytes


def simulate(model: str | Path, target: str, x: np.ndarray | list[np.ndarray], y: np.ndarray | None,
             build_dir: Path, progress: bool = True, board=None) -> tuple[dict, dict]:
    """Build the firmware for target, run the inputs through it (run_samples, every output of a one-stage
    model collected); board (tinyexit.boards.Board) prices the counts in energy."""
    from tinyexit.firmware_build import build
    from tinyexit.harness import firmware

    fw = build(model, target, build_dir)
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    if len(xs) != len(fw.input_sizes):
        raise TinyexitError(f"the model takes {len(fw.input_sizes)} inputs; {len(xs)} given")
    for a, size in zip(xs, fw.input_sizes):
        check_inputs(a, size)
    with firmware(target, fw.binary) as dev:
        result, summary = run_samples(dev, x, y, target, progress, outputs=fw.outputs)
        stack = dev.info().get("stack_used") or None  # the high-water mark after the inferences; 0: unknown
    add_memory(summary, fw, build_dir, stack)
    add_energy(summary, board)
    return result, summary


def table(s: dict) -> str:
    rows = [("samples", s["n"]), ("accuracy", f"{s['accuracy']:.2%}" if s["accuracy"] is not None else "-"),
            ("exit histogram", s["exit_histogram"]),
            (f"mean {s['cycle_unit']} per inference", f"{s['mean_instructions']:,.0f}"),
            (f"{s['cycle_unit']} without exits", f"{s['instructions_no_exit']:,.0f}" if s["instructions_no_exit"] else "-"),
            ("MACs per inference (all stages)", f"{s['macs_per_inference']:,}"),
            (f"{s['cycle_unit']} per MAC (no exit)", f"{s['instructions_per_mac']:.2f}" if s["instructions_per_mac"] else "-"),
            ("peak activation bytes", f"{s['peak_activation_bytes']:,}")]
    if "stack_bytes" in s:
        rows.append(("stack high-water mark", f"{s['stack_bytes']:,} bytes" if s["stack_bytes"] else "not measured"))
    if s.get("memory"):
        m = s["memory"]
        rows.append(("RAM / flash (weights)", f"{m['ram_bytes']:,} / {m['flash_bytes']:,} ({m['weight_flash_bytes']:,}) bytes"))
    if s.get("energy_uj") is not None:
        rows.append((f"energy per inference ({s['board']}, proxy)", f"{s['energy_uj']:,.2f} uJ"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
