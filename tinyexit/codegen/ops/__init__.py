"""One small class per operator: it checks what it supports, reports its cost, and emits its own C++
(parameter structs computed here, at generation time, and the kernel call). One module per concern:
`weights` (filters: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED), `pool`, `elementwise` (arithmetic and
activations), `movement` (reshapes, slices, concatenation, padding), `matmul` (TRANSPOSE_CONV,
BATCH_MATMUL)."""

from __future__ import annotations

from tinyexit.codegen.ops import elementwise, matmul, movement, pool, weights
from tinyexit.codegen.ops.base import Op, c_array, shape4
from tinyexit.errors import TinyexitError
from tinyexit.tflite_graph import Graph, Operator

OPS: dict[str, type[Op]] = {**weights.OPS, **pool.OPS, **elementwise.OPS, **movement.OPS,
                           **matmul.OPS}

__all__ = ["OPS", "Op", "c_array", "make", "shape4"]


def make(graph: Graph, op: Operator, name: str, weight_bits: int | None = None) -> Op:
    """weight_bits: the filter width the manifest declares (None: CONV_2D, DEPTHWISE_CONV_2D and
    FULLY_CONNECTED filters whose values all fit 4 or 2 bits are packed)."""
    cls = OPS.get(op.op)
    if cls is None:
        raise TinyexitError(f"{graph.source}: operator {op.op} (output '{graph.tensors[op.outputs[0]].name}') "
                            f"is not supported by the firmware (supported: {', '.join(sorted(OPS))})")
    return cls(graph, op, name, weight_bits)

