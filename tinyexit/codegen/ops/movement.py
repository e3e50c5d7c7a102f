"""Operators that move bytes without arithmetic: RESHAPE, CONCATENATION, PAD."""

from __future__ import annotations

import numpy as np

from tinyexit.codegen.ops.base import Op, c_array, scale_of, shape4, zp_of
from tinyexit.errors import TinyexitError


class ReshapeOp(Op):
    def call(self, ptr) -> str:
        size = int(np.prod(self.t(self.outputs[0]).shape))
        return f"copy_s8({ptr(self.op.inputs[0])}, {size}, {ptr(self.outputs[0])});"


class ConcatenationOp(Op):
    def check(self):
        out = self.t(self.op.outputs[0])
        for i in self.activations:
            if (scale_of(self.t(i)), zp_of(self.t(i))) != (scale_of(out), zp_of(out)):
                raise TinyexitError(f"{self.graph.source}: CONCATENATION input '{self.t(i).name}' is quantized "
                                    f"differently from its output; not supported")
        if len(self.activations) != len(self.op.inputs):
            raise TinyexitError(f"{self.graph.source}: CONCATENATION of constant tensors is not supported")

    def definitions(self) -> str:
        out = self.t(self.op.outputs[0])
        axis = self.op.options.axis % len(out.shape)
        outer = int(np.prod(out.shape[:axis]))
        inner = [int(np.prod(self.t(i).shape[axis:])) for i in self.op.inputs]
        return (c_array("int32_t", f"{self.name}_inner", np.array(inner)) +
                f"static const ConcatParams {self.name}_params = {{{outer}, {len(inner)}, {self.name}_inner}};\n")

    def call(self, ptr) -> str:
        srcs = ", ".join(ptr(i) for i in self.op.inputs)
        return (f"{{ const int8_t* in[] = {{{srcs}}}; concatenation_s8({self.name}_params, in, "
                f"{ptr(self.outputs[0])}); }}")


class PadOp(Op):
    def check(self):
        inp, out = self.t(self.op.inputs[0]), self.t(self.outputs[0])
        pads = self.t(self.op.inputs[1])
        if not pads.is_constant or len(inp.shape) > 4 or (scale_of(inp), zp_of(inp)) != (scale_of(out), zp_of(out)):
            raise TinyexitError(f"{self.graph.source}: PAD '{out.name}' has computed paddings, more than 4 "
                                f"dimensions or requantizes; not supported")
        if len(self.op.inputs) > 2 and self.op.inputs[2] >= 0:
            raise TinyexitError(f"{self.graph.source}: PAD '{out.name}' with a pad value (PADV2) is not supported")

    def definitions(self) -> str:
        inp, out = self.t(self.op.inputs[0]), self.t(self.outputs[0])
        before = [0] * (4 - len(inp.shape)) + [int(v) for v in self.t(self.op.inputs[1]).data.reshape(-1, 2)[:, 0]]
        return (f"static const PadParams {self.name}_params = {{{shape4(inp)}, {shape4(out)}, "
                f"{', '.join(map(str, before))}, {zp_of(out)}}};\n")

    def call(self, ptr) -> str:
        return f"pad_s8({self.name}_params, {ptr(self.op.inputs[0])}, {ptr(self.outputs[0])});"


OPS = {"RESHAPE": ReshapeOp, "CONCATENATION": ConcatenationOp, "PAD": PadOp}
