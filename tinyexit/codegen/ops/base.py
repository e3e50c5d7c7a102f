"""The operator base class and the helpers every operator module uses."""

from __future__ import annotations

import numpy as np

from tinyexit.codegen.quantization import f32
from tinyexit.errors import TinyexitError
from tinyexit.tflite_graph import Graph, Operator, Tensor


def c_array(ctype: str, name: str, values: np.ndarray) -> str:
    flat = np.asarray(values).reshape(-1)
    body = ",".join(str(int(v)) for v in flat) if flat.size else "0"
    return f"alignas(8) static const {ctype} {name}[{max(flat.size, 1)}] = {{{body}}};\n"


def shape4(t: Tensor | tuple) -> str:
    """A tensor's (or a shape's) dimensions as a C++ Shape4, padded at the front to 4."""
    s = list(t.shape if isinstance(t, Tensor) else t)
    s = [1] * (4 - len(s)) + s
    return "{" + ", ".join(str(d) for d in s) + "}"


class Op:
    """Base: `activations` are the non-constant tensors the op reads; `outputs` what it writes;
    `scratch_bytes` the working memory its DSP kernel needs for the duration of the call (the planner gives
    it a place in the arena and sets `scratch`, a C++ expression for its address)."""

    kernel = ""
    scratch_bytes = 0
    scratch = "nullptr"
    bits = 8  # weight width: 4 and 2 are emitted packed (SUBBYTE_RANGES)
    dtypes = ("int8",)  # what its activation tensors may be
    # memory planning: in_place_ok: the kernel writes output element i only after reading input element i
    # (same size), so the output may share its first activation's buffer; alias: the output IS its input's
    # bytes (a reshape): the planner gives both one buffer and the op emits no code
    in_place_ok = False
    alias = False
    aliased = False  # set by the planner when an alias op got its input's buffer
    # in_place_kernel: kernels exist (portable `<kernel>_in_place`, and the DSP kernel itself where the layer has
    # one) that compute the output over the input's buffer, the output no larger than the input, or larger when
    # grows_in_place (the buffer then takes the output's size, the input at its start); they need
    # in_place_scratch_bytes of scratch. in_place: set by the planner when it gave the output the input's buffer.
    in_place_kernel = False
    grows_in_place = False
    in_place_scratch_bytes = 0
    in_place = False
    # raster: the portable and DSP kernels write output pixels in order, each after reading its receptive field
    # and no input byte before the lowest one a later pixel reads: the output may start overlap_shift() bytes
    # before the input in one buffer
    raster = False

    def __init__(self, graph: Graph, op: Operator, name: str, weight_bits: int | None = None):
        self.graph, self.op, self.name = graph, op, name
        self.weight_bits = weight_bits
        self.activations = [i for i in op.inputs if i >= 0 and not graph.tensors[i].is_constant]
        self.outputs = list(op.outputs)
        for t in self.activations + self.outputs:
            tensor = graph.tensors[t]
            if tensor.dtype not in self.dtypes:
                raise TinyexitError(f"{graph.source}: {op.op} tensor '{tensor.name}' is {tensor.dtype}; "
                                    f"only {'/'.join(self.dtypes)} is supported here")
        self.check()

    def t(self, i: int) -> Tensor:
        return self.graph.tensors[i]

    def check(self) -> None:
        pass

    @property
    def macs(self) -> int:
        return self.graph.macs(self.op)

    def weight_bytes(self) -> int:
        return sum(self.t(i).data.nbytes for i in self.op.inputs if i >= 0 and self.t(i).is_constant)

    def int8_weight_bytes(self) -> int:
        """The constant tensors as plain int8 (weights) and int32 (biases, other 32-bit constants) would take."""
        total = 0
        for i in self.op.inputs:
            if i >= 0 and self.t(i).is_constant:
                t = self.t(i)
                wide = t.dtype in ("int32", "int64", "float32")
                total += int(np.prod(t.shape)) * (t.data.itemsize if wide else 1)
        return total

    def activation_bytes(self) -> int:
        return sum(self.t(i).nbytes for i in self.activations + self.outputs)

    def report(self) -> dict:
        """The op's cost figures (TinyEngine style), for build reports."""
        return {"op": self.op.op, "output": self.t(self.outputs[0]).name, "macs": self.macs,
                "weight_bytes": self.weight_bytes(), "int8_weight_bytes": self.int8_weight_bytes(),
                "activation_bytes": self.activation_bytes(),
                "scratch_bytes": self.scratch_bytes}

    def definitions(self) -> str:
        return ""

    def call(self, ptr) -> str:
        raise NotImplementedError


def scale_of(t: Tensor) -> float:
    return f32(t.scale[0])


def zp_of(t: Tensor) -> int:
    return int(t.zero_point[0])
