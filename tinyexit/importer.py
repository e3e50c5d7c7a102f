"""`tinyexit import`: an early-exit model made elsewhere (its exits as extra outputs) -> a staged export.

The model is one graph with a final output and one output per early exit. In the int8 `.tflite` (the user's,
or ours converted from a float Keras model / SavedModel with the user's representative set) each exit head
branches off the backbone at one tensor: the cut. Stage k runs the backbone from cut k-1 to cut k plus exit k's
head; the last stage runs the rest to the final output. Stages are cut out of the one flatbuffer, so a cut
tensor has the same quantization on both sides, and the manifest is export's (tinyexit/export.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyexit.errors import TinyexitError
from tinyexit.tflite_graph import Graph, signature_outputs

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass
class Exit:
    output: int  # the graph's tensor index of the exit's int8 logits
    cut: int     # the backbone tensor its head branches from
    name: str    # as the user named it


def load_int8(model_path: Path, representative: list[np.ndarray] | None) -> tuple[bytes, list[str]]:
    """The model as int8 TFLite and its output names in the model's own order (Keras' or the signature's).
    Float models (Keras, SavedModel, float .tflite) need a representative set of float inputs."""
    if model_path.suffix == ".tflite":
        buf = model_path.read_bytes()
        graph = Graph(buf, str(model_path))
        if all(graph.tensors[t].dtype == "float32" for t in graph.inputs) and representative is None:
            raise TinyexitError(f"{model_path}: a float model: give --representative X.npy (float inputs) to "
                                f"quantize it, or convert it to int8 first")
        if any(graph.tensors[t].dtype == "float32" for t in graph.inputs):
            raise TinyexitError(f"{model_path}: a float .tflite cannot be re-quantized here: import the Keras "
                                f"model or SavedModel it came from, with --representative")
        return buf, signature_output_names(graph)
    if representative is None:
        raise TinyexitError(f"{model_path}: a float model: give --representative X.npy (float inputs as the model "
                            f"takes them) to quantize it")
    keras_model = _load_keras(model_path)
    from tinyexit.export import convert_int8

    shape = tuple(keras_model.inputs[0].shape[1:])
    if len(keras_model.inputs) != 1:
        raise TinyexitError(f"{model_path}: an early-exit model must have one input (has {len(keras_model.inputs)})")
    x = representative[0]
    if tuple(x.shape[1:]) != shape:
        raise TinyexitError(f"representative inputs have shape {x.shape}; the model takes (N, "
                            f"{', '.join(map(str, shape))})")
    names = [t.name.split("/")[0].split(":")[0] for t in keras_model.outputs]
    layer_names = [getattr(t, "_keras_history", [None])[0] for t in keras_model.outputs]
    names = [layer.name if layer is not None else n for layer, n in zip(layer_names, names)]
    return convert_int8(keras_model, x.astype(np.float32)), names


def _load_keras(path: Path):
    from tinyexit.retrofit import load_pretrained

    if path.suffix not in KERAS_SUFFIXES:
        raise TinyexitError(f"{path}: give a .tflite, .keras or .h5 model")
    return load_pretrained(path)


def logits_tensor(graph: Graph, t: int) -> int:
    """The int8 logits behind an output: an output DEQUANTIZE and a SOFTMAX are stepped over (the firmware's
    exit test computes the softmax itself, from the logits)."""
    producers = graph.producers()
    for kind in ("DEQUANTIZE", "SOFTMAX"):
        op = producers.get(t)
        if op is not None and op.op == kind:
            t = op.inputs[0]
    return t


def find_exits(graph: Graph, final: int, exits: list[tuple[str, int]]) -> list[Exit]:
    """Each exit's branch point (cut) on the backbone that computes `final`, in backbone order."""
    backbone = graph.ancestors(final)
    producers = graph.producers()
    found = []
    for name, t in exits:
        head = graph.ancestors(t) - backbone
        if not head:
            raise TinyexitError(f"exit '{name}' is computed by the backbone itself (it has no head of its own)")
        cuts = {i for o in head for i in graph.ops[o].inputs
                if i >= 0 and not graph.tensors[i].is_constant and
                (i in graph.inputs or (i in producers and producers[i].index in backbone))}
        if len(cuts) != 1:
            names = ", ".join(f"'{graph.tensors[i].name}'" for i in sorted(cuts)) or "none"
            raise TinyexitError(f"exit '{name}' must branch off the backbone at one tensor; it reads {names}")
        found.append(Exit(t, cuts.pop(), name))
    order = {op.index: n for n, op in enumerate(graph.ops)}
    found.sort(key=lambda e: order[producers[e.cut].index] if e.cut in producers else -1)
    for a, b in zip(found, found[1:]):
        if a.cut == b.cut:
            raise TinyexitError(f"exits '{a.name}' and '{b.name}' branch off at the same tensor "
                                f"'{graph.tensors[a.cut].name}': merge them or move one")
    return found


def stage_boundaries(graph: Graph, final: int, exits: list[Exit]) -> list[tuple[list[int], list[int]]]:
    """(inputs, outputs) of each stage: stage k: cut k-1 -> [cut k, exit k's logits]; last: -> final."""
    stages, previous = [], list(graph.inputs)
    for e in exits:
        stages.append((previous, [e.cut, e.output]))
        previous = [e.cut]
    stages.append((previous, [final]))
    return stages


def resolve_outputs(graph: Graph, names: list[str], exit_names: list[str], final_name: str | None
                    ) -> tuple[int, list[tuple[str, int]]]:
    """(final output tensor, [(exit name, tensor)]) from the names the user gave: model output names (Keras
    layer names, signature keys), tensor names or output positions."""
    outputs = signature_outputs(graph)

    def lookup(name: str) -> int:
        for i, t in enumerate(outputs):
            if name in (names[i] if i < len(names) else None, graph.tensors[t].name, str(i)):
                return t
        known = ", ".join(f"'{n}'" for n in names) or ", ".join(f"'{graph.tensors[t].name}'" for t in outputs)
        raise TinyexitError(f"the model has no output '{name}' (its outputs: {known})")

    exit_tensors = [(n, lookup(n)) for n in exit_names]
    if len({t for _, t in exit_tensors}) != len(exit_tensors):
        raise TinyexitError("an exit is named twice")
    if final_name is not None:
        final = lookup(final_name)
    else:
        rest = [t for t in outputs if t not in {t for _, t in exit_tensors}]
        if len(rest) != 1:
            raise TinyexitError(f"the model has {len(outputs)} outputs and {len(exit_tensors)} exits were named: "
                                f"name the final output with --final")
        final = rest[0]
    if final in {t for _, t in exit_tensors}:
        raise TinyexitError("the final output cannot also be an exit")
    return final, exit_tensors


def signature_output_names(graph: Graph) -> list[str]:
    """The signature's output keys in signature_outputs' order (empty without a signature)."""
    sigs = graph.model.signatureDefs or []
    if not sigs:
        return []
    by_tensor = {m.tensorIndex: (m.name.decode() if isinstance(m.name, bytes) else m.name) for m in sigs[0].outputs}
    return [by_tensor[t] for t in signature_outputs(graph)]


def import_model(model_path: str | Path, exit_names: list[str], out_dir: str | Path, classes: list[str] | None,
                 out, representative: list[np.ndarray] | None = None, final_name: str | None = None,
                 task: str = "custom", preprocessing: dict | None = None, extra: dict | None = None) -> dict:
    """Write stage_K.tflite, model_int8.tflite and manifest.json (with `extra` keys) into out_dir as part of
    the group `out` (tinyexit.atomic.Outputs); return the manifest."""
    from tinyexit.export import write_stages

    model_path = Path(model_path)
    if not model_path.exists():
        raise TinyexitError(f"model not found: {model_path}")
    if not exit_names:
        raise TinyexitError("name at least one exit output (--exits)")
    buf, names = load_int8(model_path, representative)
    graph = Graph(buf, str(model_path))
    if len(graph.inputs) != 1:
        raise TinyexitError(f"{model_path}: an early-exit model must have one input (has {len(graph.inputs)})")
    final, exit_tensors = resolve_outputs(graph, names, exit_names, final_name)
    final = logits_tensor(graph, final)
    exits = find_exits(graph, final, [(n, logits_tensor(graph, t)) for n, t in exit_tensors])
    n_classes = int(np.prod(graph.tensors[final].shape))
    for e in exits:
        got = int(np.prod(graph.tensors[e.output].shape))
        if got != n_classes:
            raise TinyexitError(f"exit '{e.name}' has {got} outputs; the final output has {n_classes} classes")
    for t in [final] + [e.output for e in exits]:
        if graph.tensors[t].dtype != "int8":
            raise TinyexitError(f"output '{graph.tensors[t].name}' is {graph.tensors[t].dtype}: exits must be int8")
    classes = classes or [str(i) for i in range(n_classes)]
    if len(classes) != n_classes:
        raise TinyexitError(f"{len(classes)} class names given; the model has {n_classes} classes")
    return write_stages(graph, stage_boundaries(graph, final, exits), Path(out_dir), task, classes,
                        preprocessing or {"kind": "arrays"}, out, extra)
