"""Code generator: a manifest (export folder) or a plain `.tflite` -> interpreter-free C++.

Output (`model.cc`): weights and requantization parameters as `const` arrays, one static arena laid out
by the memory planner, a function per stage calling the kernels in order, and the exit table (LUT and
threshold per exit, tinyexit/policy.py). See firmware/include/tinyexit/runtime.h for what it defines.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyexit import manifest as mf
from tinyexit import policy
from tinyexit.codegen import fold
from tinyexit.codegen import ops as oplib
from tinyexit.codegen.planner import Buffer, plan
from tinyexit.errors import TinyexitError
from tinyexit.tflite_graph import Graph


POLICY_KINDS = {"max_prob": "kMaxProb", "margin": "kMargin", "entropy": "kEntropy"}  # runtime.h PolicyKind


@dataclass
class Stage:
    graph: Graph
    exit_output: int  # index into graph.outputs of this stage's exit logits
    ops: list = field(default_factory=list)
    weight_bits: dict = field(default_factory=dict)  # output tensor name -> the manifest's filter width


@dataclass
class Model:
    task: str
    sha256: bytes
    stages: list[Stage]
    exits: list[dict]  # manifest exits: stage, final, classes, logit_scale, policy
    source: str


def load(path: str | Path) -> Model:
    """An export folder (manifest.json + stages, hashes verified) or a single `.tflite` (one stage)."""
    path = Path(path)
    if path.is_dir() or path.name == "manifest.json":
        m = mf.read(path)
        stages = []
        for s in m["stages"]:
            exit_ = next(e for e in m["exits"] if e["stage"] == s["index"])
            bits = {layer["output"]: layer["weight_bits"] for layer in m.get("layers", [])
                    if layer.get("stage") == s["index"] and layer.get("weight_bits")}
            stages.append(Stage(Graph.load(mf.stage_path(m, s)), exit_["output"], weight_bits=bits))
        return Model(m["task"], model_hash(m), stages, m["exits"], str(path))
    if path.suffix == ".tflite":
        g = Graph.load(path)
        if len(g.inputs) != 1 or len(g.outputs) != 1:
            raise TinyexitError(f"{path}: a plain model must have one input and one output "
                                f"(has {len(g.inputs)} and {len(g.outputs)})")
        out = g.tensors[g.outputs[0]]
        scale = float(out.scale[0]) if out.scale is not None else 1.0
        exits = [{"index": 0, "stage": 0, "output": 0, "final": True, "classes": int(np.prod(out.shape)),
                  "logit_scale": scale, "policy": None}]
        return Model(path.stem, hashlib.sha256(g.buf).digest(), [Stage(g, 0)], exits, str(path))
    raise TinyexitError(f"{path}: give an export folder (manifest.json + stages) or a .tflite file")


def model_hash(manifest: dict) -> bytes:
    """The firmware's model identity (INFO's sha256): the manifest without what changes at run time through
    SET_POLICY (early-exit thresholds) and without measured costs, so a recalibrated manifest still names the
    flashed firmware. Policy kinds stay in: they are compiled in."""
    m = json.loads(json.dumps({k: v for k, v in manifest.items() if not k.startswith("_")}))
    m.get("cost", {}).pop("instructions", None)
    for e in m.get("exits", []):
        e["policy"] = None if e.get("final") else {"kind": policy.kind_of(e)}
    return hashlib.sha256(json.dumps(m, sort_keys=True, separators=(",", ":")).encode()).digest()


@dataclass
class Generated:
    source: Path
    arena_bytes: int
    input_bytes: int
    num_layers: int
    macs: int
    layers: list[dict]
    max_output_bytes: int


def generate(model: Model, out_dir: Path) -> Generated:
    out_dir.mkdir(parents=True, exist_ok=True)
    # buffers: one per activation tensor; a stage's input is the previous stage's features tensor
    key_of: dict[tuple[int, int], tuple[int, int]] = {}
    buffers: dict[tuple[int, int], Buffer] = {}
    step = 0
    layers = []
    for k, stage in enumerate(model.stages):
        g = stage.graph
        if k > 0:
            prev = model.stages[k - 1].graph
            key_of[(k, g.inputs[0])] = key_of[(k - 1, prev.outputs[0])]
        else:
            key_of[(0, g.inputs[0])] = (0, g.inputs[0])
            buffers[(0, g.inputs[0])] = Buffer(g.tensors[g.inputs[0]].nbytes, -1, -1)
        for i, op in enumerate(fold.runtime_ops(g)):
            o = oplib.make(g, op, f"s{k}_l{i}", stage.weight_bits.get(g.tensors[op.outputs[0]].name))
            stage.ops.append(o)
            for t in o.activations:
                buffers[key_of[(k, t)]].use(step)
            for t in o.outputs:
                key_of[(k, t)] = (k, t)
                buffers[(k, t)] = Buffer(g.tensors[t].nbytes, step, step)
            if o.scratch_bytes:
                buffers[("scratch", step)] = Buffer(o.scratch_bytes, step, step)
            layers.append({"stage": k, **o.report()})
            step += 1
        stage_end = step - 1
        for t in g.outputs:  # stage outputs live to the end of their stage, features into the next one
            buffers[key_of[(k, t)]].use(stage_end)
    if model.stages[0].graph.tensors[model.stages[0].graph.inputs[0]].dtype != "int8":
        raise TinyexitError(f"{model.source}: the model input must be int8")
    arena = plan(list(buffers.values()))
    step = 0
    for stage in model.stages:
        for o in stage.ops:
            if o.scratch_bytes:
                o.scratch = f"(arena + {buffers[('scratch', step)].offset})"
            step += 1

    def ptr(k: int):
        return lambda t: f"(arena + {buffers[key_of[(k, t)]].offset})"

    text = ['// Generated by tinyexit codegen from ' + Path(model.source).name + ': do not edit.',
            '#include "tinyexit/kernels.h"', '#include "tinyexit/platform.h"', '#include "tinyexit/runtime.h"',
            "", "namespace tx {", "namespace {", "",
            "// + 4: the DSP GEMM reads whole words, up to 3 bytes past a tensor's end (multiplied by zero weights)",
            f"alignas(16) int8_t arena[{max(arena, 16) + 4}];", ""]
    for stage in model.stages:
        for o in stage.ops:
            text.append(o.definitions())
    first = 0
    stage_rows = []
    for k, stage in enumerate(model.stages):
        text.append(f"void stage_{k}(uint32_t* layer_cycles) {{")
        text.append("  uint32_t t = layer_cycles ? platform::cycles() : 0;")
        for i, o in enumerate(stage.ops):
            text.append(f"  {o.call(ptr(k))}")
            text.append(f"  if (layer_cycles) {{ const uint32_t now = platform::cycles(); layer_cycles[{i}] = now - t; t = now; }}")
        text.append("}\n")
        stage_rows.append(f"{{stage_{k}, {first}, {len(stage.ops)}}}")
        first += len(stage.ops)
    exit_rows = []
    kinds = {e["index"]: policy.kind_of(e) for e in model.exits}
    if "entropy" in kinds.values():
        text.append(oplib.c_array("uint16_t", "log2_q12", policy.LOG2_Q12))
    for e in model.exits:
        stage = model.stages[e["stage"]]
        logits_t = stage.graph.outputs[e["output"]]
        lut = policy.exp_lut(e["logit_scale"])
        n = e["index"]
        text.append(oplib.c_array("uint16_t", f"exit{n}_lut", lut))
        threshold = policy.NEVER if e["final"] or not e.get("policy") else int(e["policy"]["threshold_q15"])
        entropy = "nullptr, nullptr, 0"
        if kinds[n] == "entropy":
            text.append(oplib.c_array("uint32_t", f"exit{n}_entropy_lut", policy.entropy_lut(lut)))
            entropy = f"exit{n}_entropy_lut, log2_q12, {policy.ln_classes_q12(e['classes'])}"
        exit_rows.append(f"{{{e['stage']}, {e['classes']}, {ptr(e['stage'])(logits_t)}, exit{n}_lut, "
                         f"{threshold}, {'true' if e['final'] else 'false'}, {POLICY_KINDS[kinds[n]]}, {entropy}}}")
    g0 = model.stages[0].graph
    input_bytes = g0.tensors[g0.inputs[0]].nbytes
    macs = sum(o.macs for s in model.stages for o in s.ops)
    text += [f"const StageInfo stages[] = {{{', '.join(stage_rows)}}};",
             f"ExitInfo exits[] = {{{', '.join(exit_rows)}}};",
             oplib.c_array("uint8_t", "model_sha256", np.frombuffer(model.sha256, np.uint8)),
             f"const ModelInfo info = {{\"{model.task[:15]}\", model_sha256, {len(model.stages)}, stages, "
             f"{len(model.exits)}, exits, {ptr(0)(g0.inputs[0])}, {input_bytes}, {arena}, {first}, {macs}}};",
             "", "}  // namespace", "", "const ModelInfo& model() { return info; }", "", "}  // namespace tx", ""]
    source = out_dir / "model.cc"
    source.write_text("\n".join(text))
    return Generated(source, arena, input_bytes, first, macs, layers, max(e["classes"] for e in model.exits))
