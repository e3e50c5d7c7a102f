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
        if not g.inputs or not g.outputs:
            raise TinyexitError(f"{path}: the model has no inputs or no outputs")
        # the exit is the first output (the .tflite's order); its int8 tensor where a DEQUANTIZE ends it
        out = g.tensors[dequantized_outputs(g).get(g.outputs[0], g.outputs[0])]
        scale = float(out.scale[0]) if out.scale is not None else 1.0
        exits = [{"index": 0, "stage": 0, "output": 0, "final": True, "classes": int(np.prod(out.shape)),
                  "logit_scale": scale, "policy": None}]
        return Model(path.stem, hashlib.sha256(g.buf).digest(), [Stage(g, 0)], exits, str(path))
    raise TinyexitError(f"{path}: give an export folder (manifest.json + stages) or a .tflite file")


def model_hash(manifest: dict) -> bytes:
    """The firmware's model identity (INFO's sha256): the manifest without what changes at run time through
    SET_POLICY (early-exit thresholds) and SET_OFFLOAD (the offload section) and without measured costs, so a
    recalibrated manifest still names the flashed firmware. Policy kinds stay in: they are compiled in."""
    m = json.loads(json.dumps({k: v for k, v in manifest.items() if not k.startswith("_")}))
    m.get("cost", {}).pop("instructions", None)
    m.pop("offload", None)
    for e in m.get("exits", []):
        e["policy"] = None if e.get("final") else {"kind": policy.kind_of(e)}
    return hashlib.sha256(json.dumps(m, sort_keys=True, separators=(",", ":")).encode()).digest()


MAX_INPUTS, MAX_OUTPUTS = 8, 16  # runtime.h kMaxOutputs; INFO's reply room


def dequantized_outputs(graph: Graph) -> dict[int, int]:
    """Outputs that a DEQUANTIZE makes float: output tensor -> its int8 input. The firmware stays integer:
    it sends the int8 tensor and the host dequantizes it as TFLite Micro does (describe_outputs)."""
    producers = graph.producers()
    found = {}
    for t in graph.outputs:
        op = producers.get(t)
        if op is not None and op.op == "DEQUANTIZE" and graph.tensors[op.inputs[0]].dtype == "int8":
            found[t] = op.inputs[0]
    return found


def describe_outputs(graph: Graph) -> list[dict]:
    """The stage's outputs as the host sees them: name, shape, dtype, and for outputs the firmware sends as
    int8 but the model gives as float (an output DEQUANTIZE), the scale and zero point to dequantize with."""
    aliases = dequantized_outputs(graph)
    rows = []
    for t in graph.outputs:
        tensor = graph.tensors[t]
        row = {"name": tensor.name, "shape": list(tensor.shape), "dtype": tensor.dtype, "dequantize": None}
        if t in aliases:
            src = graph.tensors[aliases[t]]
            row["dequantize"] = {"scale": float(src.scale[0]), "zero_point": int(src.zero_point[0])}
        rows.append(row)
    return rows


@dataclass
class Generated:
    source: Path
    arena_bytes: int
    input_bytes: int
    num_layers: int
    macs: int
    layers: list[dict]
    max_output_bytes: int
    input_sizes: list[int] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)  # the last stage's, describe_outputs


@dataclass
class Layout:
    """The operators of every stage and the static memory plan: buffer per activation tensor and scratch."""
    key_of: dict
    buffers: dict
    arena: int
    layers: list[dict]
    unsupported: list[dict]  # tolerant layouts only: stage, index, op, output, reason
    rel: dict = field(default_factory=dict)  # a tensor's bytes from its buffer's offset, where it shares one

    def address(self, key) -> int:
        """A tensor's (or scratch's) offset in the arena."""
        return self.buffers[key].offset + self.rel.get(key, 0)


def share_buffers(buffers: dict, key_of: dict, rel: dict, shared: list) -> None:
    """Gives an operator's output its input's buffer, in step order (so chains share one buffer): always for
    a reshape (`alias`: the op then emits nothing); for an `in_place_ok` op when the input is as large as the
    output; for an `in_place_kernel` op (its first activation) when the output is no larger than the input or
    it `grows_in_place`; and for a `raster` op its output `overlap_shift()` bytes before its input (the
    writes never reach bytes still to be read). Not when anything reads the input (or anything sharing its
    buffer) after this step. The shared buffer records each tensor's bytes and steps (Buffer.parts) and `rel`
    each tensor's place in it."""
    for k, step, o in shared:
        out_key = key_of[(k, o.outputs[0])]
        out = buffers[out_key]
        candidates = o.activations[:1] if o.alias or o.in_place_kernel or o.raster else o.activations
        for t in candidates:
            in_key = key_of[(k, t)]
            source = buffers[in_key]
            if source is out or (not o.alias and source.last != step):
                continue
            in_bytes, out_bytes = o.t(t).nbytes, o.t(o.outputs[0]).nbytes
            if o.alias or (in_bytes == out_bytes and o.in_place_ok):
                shift = 0
            elif o.in_place_kernel and (out_bytes <= in_bytes or o.grows_in_place):
                shift = 0
                o.in_place = True
            elif o.raster:
                shift = o.overlap_shift()
            else:
                continue
            merge(buffers, rel, source, in_key, out, out_key, shift)
            o.aliased = o.alias
            break


def merge(buffers: dict, rel: dict, source, in_key, out, out_key, shift: int) -> None:
    """Puts tensor buffer `out` into `source`'s buffer, starting `shift` bytes before the input `in_key`."""
    parts = source.segments()
    at = rel.get(in_key, 0) - shift
    if at < 0:  # the output starts before the buffer: everything else moves up
        for part in parts:
            part[2] -= at
        for key, b in buffers.items():
            if b is source:
                rel[key] = rel.get(key, 0) - at
        at = 0
    parts.append([out.first, out.last, at, out.size])
    source.parts = parts
    source.first, source.last = min(source.first, out.first), max(source.last, out.last)
    source.size = max(r + size for _, _, r, size in parts)
    for key, b in list(buffers.items()):
        if b is out:
            buffers[key] = source
            rel[key] = at


PADDED_COPY_SHARE = 1 / 8  # of the arena: what a padded input copy may cost (the KWS model's first layer: 3%)


def drop_padded_copies(buffers: dict, ops: list, arena: int) -> int:
    """The DSP convolutions' padded input copies (ConvOp.padded_bytes) buy speed with scratch: each one that
    costs more than PADDED_COPY_SHARE of the arena is dropped (its border pixels then gather from the input
    itself), largest first. Returns the arena."""
    for o in sorted((o for o in ops if getattr(o, "padded_bytes", 0)), key=lambda o: -o.padded_bytes):
        scratch = buffers[("scratch", o.step)]
        scratch.size -= o.padded_bytes
        smaller = plan(list(buffers.values()))
        if arena - smaller > arena * PADDED_COPY_SHARE:
            o.drop_padded_copy()
            arena = smaller
        else:
            scratch.size += o.padded_bytes
    return plan(list(buffers.values()))


def layout(model: Model, tolerant: bool = False) -> Layout:
    """Make each stage's operators (`Stage.ops`) and plan the arena. tolerant: an operator the firmware cannot
    run is recorded in `unsupported` (its outputs still get buffers) instead of ending the generation."""
    # buffers: one per activation tensor; a stage's input is the previous stage's features tensor
    key_of: dict[tuple[int, int], tuple[int, int]] = {}
    buffers: dict[tuple[int, int], Buffer] = {}
    step = 0
    layers, unsupported = [], []
    shared: list[tuple[int, int, object]] = []  # (stage, step, op) of reshapes and in-place operators
    for k, stage in enumerate(model.stages):
        g = stage.graph
        stage.ops = []
        aliases = dequantized_outputs(g)
        if len(g.outputs) > MAX_OUTPUTS:
            raise TinyexitError(f"{model.source}: a stage with {len(g.outputs)} outputs (at most {MAX_OUTPUTS})")
        if k > 0:
            prev = model.stages[k - 1].graph
            key_of[(k, g.inputs[0])] = key_of[(k - 1, prev.outputs[0])]
        else:
            if len(g.inputs) > MAX_INPUTS:
                raise TinyexitError(f"{model.source}: a model with {len(g.inputs)} inputs (at most {MAX_INPUTS})")
            for t in g.inputs:
                if g.tensors[t].dtype != "int8" and not tolerant:
                    raise TinyexitError(f"{model.source}: input '{g.tensors[t].name}' is {g.tensors[t].dtype}; "
                                        f"the model inputs must be int8 (convert with int8 inputs)")
                key_of[(0, t)] = (0, t)
                buffers[(0, t)] = Buffer(g.tensors[t].nbytes, -1, -1)
        for i, op in enumerate(fold.runtime_ops(g)):
            if op.outputs[0] in aliases:  # an output DEQUANTIZE: the host does it
                continue
            try:
                o = oplib.make(g, op, f"s{k}_l{i}", stage.weight_bits.get(g.tensors[op.outputs[0]].name))
            except TinyexitError as err:
                if not tolerant:
                    raise
                reason = str(err).removeprefix(f"{g.source}: ")
                unsupported.append({"stage": k, "index": i, "op": op.op,
                                    "output": g.tensors[op.outputs[0]].name, "reason": reason})
                for t in op.inputs:
                    if t >= 0 and (k, t) in key_of:
                        buffers[key_of[(k, t)]].use(step)
                for t in op.outputs:
                    key_of[(k, t)] = (k, t)
                    buffers[(k, t)] = Buffer(g.tensors[t].nbytes, step, step)
                step += 1
                continue
            stage.ops.append(o)
            for t in o.activations:
                buffers[key_of[(k, t)]].use(step)
            for t in o.outputs:
                key_of[(k, t)] = (k, t)
                buffers[(k, t)] = Buffer(g.tensors[t].nbytes, step, step)
            layers.append((k, i, o))
            o.step = step
            if o.alias or o.in_place_ok or o.in_place_kernel or o.raster:
                shared.append((k, step, o))
            step += 1
        stage_end = step - 1
        for t, src in aliases.items():
            key_of[(k, t)] = key_of[(k, src)]
        for t in g.outputs:  # stage outputs live to the end of their stage, features into the next one
            if (k, t) in key_of:
                buffers[key_of[(k, t)]].use(stage_end)
    rel: dict = {}
    share_buffers(buffers, key_of, rel, shared)
    for k, i, o in layers:  # scratch: the DSP kernel's, or the in-place kernel's where larger
        if o.in_place:
            o.scratch_bytes = max(o.scratch_bytes, o.in_place_scratch_bytes)
        if o.scratch_bytes:
            buffers[("scratch", o.step)] = Buffer(o.scratch_bytes, o.step, o.step)
    arena = plan(list(buffers.values()))
    arena = drop_padded_copies(buffers, [o for _, _, o in layers], arena)
    layers = [{"stage": k, "index": i, **o.report()} for k, i, o in layers]
    for stage in model.stages:
        for o in stage.ops:
            if o.scratch_bytes:
                o.scratch = f"(arena + {buffers[('scratch', o.step)].offset})"
    return Layout(key_of, buffers, arena, layers, unsupported, rel)


def generate(model: Model, out_dir: Path) -> Generated:
    out_dir.mkdir(parents=True, exist_ok=True)
    lay = layout(model)
    key_of, buffers, arena, layers = lay.key_of, lay.buffers, lay.arena, lay.layers

    def ptr(k: int):
        return lambda t: f"(arena + {lay.address(key_of[(k, t)])})"

    def refs(name: str, k: int, tensors: list[int]) -> str:
        g = model.stages[k].graph
        sizes = [int(np.prod(g.tensors[t].shape)) for t in tensors]  # int8 bytes (dequantized outputs too)
        rows = ", ".join(f"{{{ptr(k)(t)}, {n}}}" for t, n in zip(tensors, sizes))
        return f"const TensorRef {name}[] = {{{rows}}};"

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
        text.append(refs(f"stage_{k}_outputs", k, stage.graph.outputs))
        text.append(f"void stage_{k}(uint32_t* layer_cycles) {{")
        text.append("  uint32_t t = layer_cycles ? platform::cycles() : 0;")
        for i, o in enumerate(stage.ops):
            text.append(f"  {o.call(ptr(k))}")
            text.append(f"  if (layer_cycles) {{ const uint32_t now = platform::cycles(); layer_cycles[{i}] = now - t; t = now; }}")
        text.append("}\n")
        stage_rows.append(f"{{stage_{k}, {first}, {len(stage.ops)}, stage_{k}_outputs, {len(stage.graph.outputs)}}}")
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
    input_sizes = [g0.tensors[t].nbytes for t in g0.inputs]
    input_bytes = sum(input_sizes)
    text.append(refs("model_inputs", 0, g0.inputs))
    macs = sum(o.macs for s in model.stages for o in s.ops)
    text += [f"const StageInfo stages[] = {{{', '.join(stage_rows)}}};",
             f"ExitInfo exits[] = {{{', '.join(exit_rows)}}};",
             oplib.c_array("uint8_t", "model_sha256", np.frombuffer(model.sha256, np.uint8)),
             f"const ModelInfo info = {{\"{model.task[:15]}\", model_sha256, {len(model.stages)}, stages, "
             f"{len(model.exits)}, exits, model_inputs, {len(g0.inputs)}, {input_bytes}, {arena}, {first}, {macs}}};",
             "", "}  // namespace", "", "const ModelInfo& model() { return info; }", "", "}  // namespace tx", ""]
    source = out_dir / "model.cc"
    source.write_text("\n".join(text))
    return Generated(source, arena, input_bytes, first, macs, layers, max(e["classes"] for e in model.exits),
                     input_sizes, describe_outputs(model.stages[-1].graph))
