"""Compatibility report (`tinyexit check`): every operator of a model with whether the firmware runs it, with
which kernel, and what the model would cost (MACs, arena, weight flash), without compiling anything."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyexit.codegen import Model, Stage, layout, load
from tinyexit.tflite_graph import Graph, signature_outputs

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass
class Report:
    source: str
    rows: list[dict]
    arena_bytes: int
    weight_bytes: int
    macs: int
    notes: list[str] = field(default_factory=list)

    @property
    def unsupported(self) -> list[dict]:
        return [r for r in self.rows if r["status"] != "supported"]

    def as_dict(self) -> dict:
        return {"source": self.source, "operators": self.rows, "arena_bytes": self.arena_bytes,
                "weight_flash_bytes": self.weight_bytes, "macs": self.macs,
                "unsupported": len(self.unsupported), "notes": self.notes}


def kernel_of(o) -> str:
    """Which implementation the firmware calls: the DSP twin (on cores with the DSP extension, portable
    elsewhere), the portable kernel, sub-byte packed weights."""
    kernel = getattr(o, "kernel", "") or o.op.op.lower() + "_s8"
    dsp = getattr(o, "dsp", False)
    kind = "dsp" if dsp else "portable"
    if getattr(o, "bits", 8) < 8:
        kind = f"packed {o.bits}-bit, " + kind
    return f"{kernel} ({kind})"


def keras_origin(name: str, layer_names: list[str]) -> str | None:
    """The Keras layer a TFLite tensor came from, where its name shows it (`model/conv2d_1/Relu;...`)."""
    first = name.split(";")[0]
    parts = first.split("/")
    if len(parts) < 2:
        return None
    candidate = parts[1]
    # Keras 3 traces add a call-count suffix (conv2d_1 -> conv2d_1_2): the longest known layer name wins
    matches = [n for n in layer_names if candidate == n or candidate.startswith(n + "_")]
    if matches:
        return max(matches, key=len)
    return re.sub(r"_\d+$", "", candidate) if not layer_names else candidate


def _keras_model(path: Path):
    """A Keras model converted to int8 with random calibration data: the graph and its costs are the model's
    (the values are not: quantize it with `tinyexit import` for real)."""
    from tinyexit.export import convert_int8
    from tinyexit.retrofit import load_pretrained

    model = load_pretrained(path)
    rng = np.random.default_rng(0)
    samples = [rng.normal(0, 1, (8, *i.shape[1:])).astype(np.float32) for i in model.inputs]
    buf = convert_int8(model, samples if len(samples) > 1 else samples[0])
    outputs = [t._keras_history[0].name for t in model.outputs]  # the layers the model's outputs come from
    return buf, [layer.name for layer in model.layers], outputs


def check(path: str | Path) -> Report:
    path = Path(path)
    notes, layer_names, origin = [], [], {}
    if path.suffix in KERAS_SUFFIXES and path.is_file():
        buf, layer_names, output_layers = _keras_model(path)
        # graph outputs are named after the signature, not the layer: the signature's order is Keras' order
        origin = dict(zip(signature_outputs(Graph(buf)), output_layers))
        model = Model(path.stem, b"", [Stage(Graph(buf, str(path)), 0)], [], str(path))
        notes.append("a float Keras model: converted here with TF's int8 converter and random calibration data "
                     "to see its operators and costs; `tinyexit import` quantizes it with your data")
    else:
        model = load(path)
    for stage in model.stages:
        g = stage.graph
        floats = [g.tensors[t].name for t in g.inputs if g.tensors[t].dtype != "int8"]
        if floats:
            notes.append(f"stage {model.stages.index(stage)} input '{floats[0]}' is {g.tensors[g.inputs[0]].dtype}: "
                         f"the firmware takes int8 models (full-integer quantization)")
    lay = layout(model, tolerant=True)
    by_position = {(r["stage"], r["index"]): r for r in lay.unsupported}
    made = {(k, o.op.index): o for k, s in enumerate(model.stages) for o in s.ops}
    from tinyexit.codegen import dequantized_outputs
    from tinyexit.codegen.fold import runtime_ops

    rows = []
    for k, stage in enumerate(model.stages):
        g = stage.graph
        aliases = dequantized_outputs(g)
        running = {op.index for op in runtime_ops(g)}
        for i, op in enumerate(g.ops):
            out = g.tensors[op.outputs[0]] if op.outputs else None
            row = {"stage": k, "op": op.op, "output": out.name if out else "", "macs": g.macs(op),
                   "keras_layer": origin.get(op.outputs[0]) or keras_origin(out.name, layer_names) if out else None}
            o = made.get((k, op.index))
            if op.outputs and op.outputs[0] in aliases:
                row.update(status="supported", kernel="on the host (the firmware sends the int8 tensor)")
            elif op.index not in running:
                row.update(status="supported", kernel="folded at generation time")
            elif o is not None:
                row.update(status="supported", kernel=kernel_of(o), weight_bytes=o.weight_bytes(),
                           scratch_bytes=o.scratch_bytes)
            else:
                hit = next((r for (s, _), r in by_position.items() if s == k and r["output"] == row["output"]), None)
                reason = (hit["reason"] if hit else "not supported").split(" (supported: ")[0]
                if " is float32" in reason:
                    reason = "float32 tensors: the firmware runs int8 (full-integer) models"
                row.update(status="unsupported", reason=reason)
            rows.append(row)
    weights = sum(r.get("weight_bytes", 0) for r in rows)
    return Report(str(path), rows, lay.arena, weights, sum(r["macs"] for r in rows), notes)


def table(report: Report) -> str:
    lines = [f"{'stage':>5}  {'operator':<22} {'status':<11} {'MACs':>11}  {'weights':>8}  kernel / reason"]
    for r in report.rows:
        detail = r.get("kernel") or r.get("reason", "")
        origin = f"  [Keras: {r['keras_layer']}]" if r.get("keras_layer") and r["status"] != "supported" else ""
        lines.append(f"{r['stage']:>5}  {r['op']:<22} {r['status']:<11} {r['macs']:>11,}  "
                     f"{r.get('weight_bytes', 0):>8,}  {detail}{origin}")
    n_bad = len(report.unsupported)
    lines.append(f"{len(report.rows)} operators, {n_bad} unsupported; {report.macs:,} MACs; activation arena "
                 f"(static plan) {report.arena_bytes:,} bytes; weights in flash {report.weight_bytes:,} bytes")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)
