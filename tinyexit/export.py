"""Full-integer int8 export, one `.tflite` per stage plus `manifest.json`.

The whole early-exit network is converted once, as a single model whose outputs are every cut tensor,
every exit's logits and the final logits; each stage is then cut out of that flatbuffer. Converting once
is what guarantees that a cut tensor has the same scale and zero point on both sides of the cut.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from tinyexit import atomic
from tinyexit import manifest as mf
from tinyexit import policy
from tinyexit.errors import TinyexitError
from tinyexit.models import ModelSpec
from tinyexit.tflite_graph import Graph, extract, signature_outputs


def default_cuts(spec: ModelSpec) -> list[tuple[str, str]]:
    """(cut layer, exit logits layer) per early exit: the retrofit's, or by the builder's naming."""
    if spec.cuts:
        return [tuple(c) for c in spec.cuts]
    return [(f"block{b}", f"exit{j}") for j, b in enumerate(spec.exits_after)]


def export_model(model, spec: ModelSpec, cuts: list[tuple[str, str]] | None = None):
    """Keras model with outputs [cut features..., exit logits..., final logits]."""
    import keras

    cuts = default_cuts(spec) if cuts is None else cuts
    features = [model.get_layer(cut).output for cut, _ in cuts]
    logits = [model.get_layer(head).output for _, head in cuts] + [model.get_layer("final").output]
    return keras.Model(model.inputs, features + logits, name=f"{spec.task}_export")


@contextlib.contextmanager
def native_output_captured():
    """The TFLite converter prints pages of MLIR diagnostics from C++ straight to fds 1 and 2: keep them
    off the terminal, and show them only if the conversion fails."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except Exception:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def batch_one_converter(model):
    """A TFLite converter for `model` traced with batch size 1: every shape is static, so shape
    arithmetic (e.g. Keras' Flatten) folds away instead of becoming SHAPE/STRIDED_SLICE/PACK ops."""
    import tensorflow as tf

    specs = [tf.TensorSpec((1, *i.shape[1:]), tf.float32) for i in model.inputs]
    with tempfile.TemporaryDirectory() as saved, native_output_captured():
        model.export(saved, format="tf_saved_model", input_signature=specs if len(specs) == 1 else [specs],
                     verbose=False)
        yield tf.lite.TFLiteConverter.from_saved_model(saved)


def convert_int8(model, representative: np.ndarray | list[np.ndarray], float_outputs: bool = False) -> bytes:
    """Full-integer post-training quantization: int8 weights, activations, inputs and outputs (float32
    outputs with float_outputs: the converter ends them in DEQUANTIZE). representative: (N, ...) samples, or
    one such array per input of a model with several inputs."""
    import tensorflow as tf

    arrays = representative if isinstance(representative, (list, tuple)) else [representative]

    def samples():
        for i in range(len(arrays[0])):
            yield [a[i][None].astype(np.float32) for a in arrays]

    with batch_one_converter(model) as converter:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.float32 if float_outputs else tf.int8
        return converter.convert()


def convert_float(model) -> bytes:
    """Float TFLite model (no quantization): used where only the graph's shape and cost matter."""
    with batch_one_converter(model) as converter:
        return converter.convert()


def stage_boundaries(graph: Graph, n_exits: int) -> list[tuple[list[int], list[int]]]:
    """(inputs, outputs) tensor indices of each stage in the unsplit model."""
    outs = signature_outputs(graph)
    if len(outs) != 2 * n_exits + 1:
        raise TinyexitError(f"converted model has {len(outs)} outputs, expected {2 * n_exits + 1}")
    features, logits = outs[:n_exits], outs[n_exits:]
    for t in logits:  # guards the output-order mapping: logits are (1, classes), features (1, H, W, C)
        if len(graph.tensors[t].shape) != 2:
            raise TinyexitError(f"converted model: output '{graph.tensors[t].name}' should be logits, "
                                f"has shape {graph.tensors[t].shape}")
    stages = []
    for k in range(n_exits + 1):
        ins = [graph.inputs[0]] if k == 0 else [features[k - 1]]
        stage_outs = [features[k], logits[k]] if k < n_exits else [logits[k]]
        stages.append((ins, stage_outs))
    return stages


def check_cuts(stage_graphs: list[Graph]) -> None:
    """Each cut tensor must carry the same dtype, shape, scale and zero point on both sides."""
    for k in range(1, len(stage_graphs)):
        out = stage_graphs[k - 1].tensors[stage_graphs[k - 1].outputs[0]].describe()
        inp = stage_graphs[k].tensors[stage_graphs[k].inputs[0]].describe()
        keys = ("dtype", "shape", "scale", "zero_point")
        if any(out[key] != inp[key] for key in keys):
            raise TinyexitError(f"cut between stage {k - 1} and {k} is quantized differently on the two sides: "
                                f"{ {k_: out[k_] for k_ in keys} } vs { {k_: inp[k_] for k_ in keys} }")


def layer_table(stage_graphs: list[Graph], tensor_bits: dict[str, int] | None = None) -> list[dict]:
    """tensor_bits: weight tensor name -> width for filters narrowed to sub-byte grids (others: their dtype's)."""
    rows = []
    for k, g in enumerate(stage_graphs):
        for op in g.ops:
            w = g.weight_tensor(op)
            bits = None if w is None else (tensor_bits or {}).get(w.name, 4 if w.dtype == "int4" else 8)
            rows.append({"stage": k, "op": op.op, "output": g.tensors[op.outputs[0]].name, "macs": g.macs(op),
                         "weight_dtype": w.dtype if w is not None else None, "weight_bits": bits})
    return rows


def stage_weight_bytes(g: Graph, tensor_bits: dict[str, int]) -> dict[str, int]:
    """Bytes of the stage's filters by width as the firmware stores them ("int8", "int4" packed two per byte,
    "int2" four per byte) and of its biases ("bias"); without sub-byte layers, Graph.weight_bytes()."""
    totals = g.weight_bytes()
    if not tensor_bits:
        return totals
    totals = {"bias": totals["bias"]} if "bias" in totals else {}
    for op in g.ops:
        w = g.weight_tensor(op)
        if w is not None and w.is_constant:
            bits = tensor_bits.get(w.name, 4 if w.dtype == "int4" else 8)
            key = f"int{bits}"
            totals[key] = totals.get(key, 0) + -(-int(np.prod(w.shape)) * bits // 8)
    return totals


def export(model, spec: ModelSpec, representative: np.ndarray, out_dir: str | Path,
           macs_no_exit: int | None = None, cuts: list[tuple[str, str]] | None = None,
           weight_bits: dict[str, int] | None = None, int4_tensors: bool = False) -> dict:
    """Quantize and write stage_K.tflite files, model_int8.tflite and manifest.json; return the manifest.

    `cuts` overrides which (cut layer, exit head) pairs become early exits (default: the spec's).
    `weight_bits`: Keras layer name -> 8, 4 or 2; sub-byte filters are stored as int8 values on their grid
    (tinyexit/qat.py), or with `int4_tensors` as TFLite's packed INT4 for stock TFLite Micro."""
    from tinyexit.qat import narrow_weights, weight_tensor_bits

    out_dir = Path(out_dir)
    cuts = default_cuts(spec) if cuts is None else cuts
    n_exits = len(cuts)
    unsplit = convert_int8(export_model(model, spec, cuts), representative)
    tensor_bits = {}
    narrow = {layer: b for layer, b in (weight_bits or {}).items() if b != 8}
    if narrow:
        tensor_bits = weight_tensor_bits(Graph(unsplit, "converted model"), narrow)
        unsplit = narrow_weights(unsplit, tensor_bits, int4_tensors)
    graph = Graph(unsplit, "converted model")
    with atomic.outputs() as outputs:  # all files or none
        return write_stages(graph, stage_boundaries(graph, n_exits), out_dir, spec.task, spec.classes,
                            spec.preprocessing, outputs, tensor_bits=tensor_bits, macs_no_exit=macs_no_exit)


def macs_of(model) -> int:
    """MACs of a Keras model, counted on its TFLite graph (the same counter the manifest uses)."""
    return Graph(convert_float(model), model.name).total_macs()


def write_stages(graph: Graph, boundaries: list[tuple[list[int], list[int]]], out_dir: Path, task: str,
                 classes: list[str], preprocessing: dict, out: atomic.Outputs, extra: dict | None = None,
                 tensor_bits: dict[str, int] | None = None, macs_no_exit: int | None = None) -> dict:
    """Cut `graph` into stages at `boundaries` ((inputs, outputs) per stage: [features, exit logits], the last
    [final logits]), write stage_K.tflite, model_int8.tflite and manifest.json (with `extra` keys) into the
    group `out`; return the manifest. Operators no stage output needs (e.g. a SOFTMAX after the logits) are
    left out."""
    tensor_bits = tensor_bits or {}
    n_exits = len(boundaries) - 1
    stage_graphs, stages = [], []
    for k, (ins, outs) in enumerate(boundaries):
        g = Graph(extract(graph, ins, outs), f"stage {k}")
        stage_graphs.append(g)
        outputs = [g.tensors[t].describe() for t in g.outputs]
        for o, role in zip(outputs, ["features", "logits"] if k < n_exits else ["logits"]):
            o["role"] = role
        stages.append({"index": k, "file": f"stage_{k}.tflite", "sha256": g.sha256(),
                       "inputs": [g.tensors[t].describe() for t in g.inputs], "outputs": outputs,
                       "macs": g.total_macs(), "weight_bytes": stage_weight_bytes(g, tensor_bits), "exit": k})
    check_cuts(stage_graphs)
    needed = set().union(*(graph.ancestors(t) for _, outs in boundaries for t in outs))
    if sum(len(g.ops) for g in stage_graphs) != len(needed):
        raise TinyexitError(f"stages hold {sum(len(g.ops) for g in stage_graphs)} operators, the model {len(needed)}: "
                            f"an operator is shared between stages (a connection crosses a cut)")
    exits = []
    for k, stage in enumerate(stages):
        logits = stage["outputs"][-1]
        final = k == n_exits
        exits.append({"index": k, "stage": k, "output": len(stage["outputs"]) - 1, "final": final,
                      "classes": int(np.prod(logits["shape"])), "logit_scale": logits["scale"],
                      "policy": None if final else {"kind": "max_prob", "threshold": 2.0,
                                                    "threshold_q15": policy.NEVER}})
    stage_macs = [s["macs"] for s in stages]
    # reaching exit k costs every stage up to k; the last early exit's head is skipped on the way on,
    # so cumulative stage MACs is exactly what runs
    manifest = {
        "format": mf.FORMAT, "version": mf.VERSION, "task": task, "classes": classes,
        "input": {**graph.tensors[graph.inputs[0]].describe(), "preprocessing": preprocessing},
        "stages": stages, "exits": exits, "layers": layer_table(stage_graphs, tensor_bits),
        "unsplit": {"file": "model_int8.tflite", "sha256": graph.sha256()},
        "cost": {"macs_to_exit": np.cumsum(stage_macs).astype(int).tolist(), "macs_all_stages": int(sum(stage_macs)),
                 "macs_no_exit": macs_no_exit},
        **(extra or {}),
    }
    for k, g in enumerate(stage_graphs):
        out.write_bytes(out_dir / f"stage_{k}.tflite", g.buf)
    out.write_bytes(out_dir / "model_int8.tflite", graph.buf)
    mf.write(out_dir, manifest, out)
    return manifest
