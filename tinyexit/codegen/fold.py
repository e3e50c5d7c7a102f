"""Constant folding before code generation: operators whose inputs are all known at generation time
(shape arithmetic such as SHAPE -> STRIDED_SLICE -> PACK, which Keras' Flatten lowers to when the batch size is
not fixed) are evaluated here, their outputs become constant tensors, and only the rest run on the device.

SHAPE is known from static shapes alone; the byte-moving operators are evaluated through the very plans their
codegen classes emit (ops/movement.py), so a folded and a device-run slice agree; integer arithmetic on
unquantized tensors (the int32 shape maths) with numpy. Quantized arithmetic is never folded here: it would
need TFLite Micro's integer rounding, and the converter already folds constant weights. The firmware never
sees an int32 tensor: what cannot be folded and is not int8 is refused by name.
"""

from __future__ import annotations

import numpy as np

from tinyexit.codegen.ops import movement
from tinyexit.errors import TinyexitError
from tinyexit.tflite_graph import NUMPY_TYPES, TYPE_NAMES, Graph, Operator


def runtime_ops(graph: Graph) -> list[Operator]:
    """The operators the firmware must run, in order, after folding what can be folded (the results are
    stored as `data` on the graph's tensors, which makes them constants for the remaining operators)."""
    remaining = []
    for op in graph.ops:
        results = evaluate(graph, op)
        if results is None:
            remaining.append(op)
            continue
        for t, value in zip(op.outputs, results):
            tensor = graph.tensors[t]
            value = np.asarray(value).astype(NUMPY_TYPES.get(tensor.dtype, value.dtype))
            if value.size != int(np.prod(tensor.shape)):
                raise TinyexitError(f"{graph.source}: folding {op.op} gave {value.size} values for tensor "
                                    f"'{tensor.name}' of shape {tensor.shape}")
            tensor.data = value.reshape(tensor.shape)
    for t in graph.outputs:
        if graph.tensors[t].is_constant:
            raise TinyexitError(f"{graph.source}: output '{graph.tensors[t].name}' does not depend on the input")
    return remaining


def evaluate(graph: Graph, op: Operator) -> list[np.ndarray] | None:
    """The op's outputs if they are known at generation time, else None (the device runs it)."""
    inputs = [graph.tensors[i] for i in op.inputs if i >= 0]
    if op.op == "SHAPE":
        out_type = NUMPY_TYPES[TYPE_NAMES.get(op.options.outType, "int32")] if op.options else np.int32
        return [np.array(inputs[0].shape, out_type)]
    if not inputs or not all(t.is_constant for t in inputs):
        return None
    if op.op in movement.OPS:
        return movement.OPS[op.op].evaluate(graph, op)
    fold = ARITHMETIC.get(op.op)
    quantized = any(graph.tensors[t].scale is not None for t in op.inputs + op.outputs if t >= 0)
    if fold is None or quantized:
        if any(graph.tensors[t].dtype != "int8" for t in op.outputs):
            raise TinyexitError(f"{graph.source}: {op.op} '{graph.tensors[op.outputs[0]].name}' computes "
                                f"{graph.tensors[op.outputs[0]].dtype} values from constants, which cannot be "
                                f"evaluated at generation time (foldable: SHAPE, {', '.join(sorted(movement.OPS))}, "
                                f"and on unquantized tensors {', '.join(sorted(ARITHMETIC))})")
        return None
    options = op.options
    if getattr(options, "fusedActivationFunction", 0):
        raise TinyexitError(f"{graph.source}: {op.op} on constants with a fused activation; not supported")
    return [np.asarray(fold([t.data for t in inputs], options))]


def _floor_div(a, b):
    return np.floor_divide(a, b) if np.issubdtype(np.result_type(a, b), np.integer) else np.floor(a / b)


def _truncating_div(a, b):  # TFLite's integer DIV rounds toward zero (C++ division)
    if np.issubdtype(np.result_type(a, b), np.integer):
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(np.result_type(a, b))
    return a / b


def _reduce(f):
    def run(x, options):
        axes = tuple(int(a) % max(x[0].ndim, 1) for a in np.asarray(x[1]).reshape(-1))
        return f(x[0], axis=axes, keepdims=bool(getattr(options, "keepDims", False))).astype(x[0].dtype)
    return run


def _gather(x, options):
    axis = int(getattr(options, "axis", 0)) % max(x[0].ndim, 1)
    return np.take(x[0], x[1], axis=axis)


ARITHMETIC = {
    "ADD": lambda x, o: x[0] + x[1],
    "SUB": lambda x, o: x[0] - x[1],
    "MUL": lambda x, o: x[0] * x[1],
    "DIV": lambda x, o: _truncating_div(x[0], x[1]),
    "FLOOR_DIV": lambda x, o: _floor_div(x[0], x[1]),
    "FLOOR_MOD": lambda x, o: np.mod(x[0], x[1]),
    "MAXIMUM": lambda x, o: np.maximum(x[0], x[1]),
    "MINIMUM": lambda x, o: np.minimum(x[0], x[1]),
    "NEG": lambda x, o: -x[0],
    "CAST": lambda x, o: x[0],  # the output dtype is applied when the result is stored
    "FILL": lambda x, o: np.full(np.asarray(x[0]).reshape(-1), x[1]),
    "RANGE": lambda x, o: np.arange(x[0], x[1], x[2]),
    "REDUCE_PROD": _reduce(np.prod),
    "SUM": _reduce(np.sum),
    "REDUCE_MAX": _reduce(np.max),
    "REDUCE_MIN": _reduce(np.min),
    "GATHER": _gather,
}
