"""Elementwise operators and activations: ADD, SOFTMAX."""

from __future__ import annotations

import numpy as np

from tinyexit.codegen.ops.base import Op, scale_of, zp_of
from tinyexit.codegen.quantization import activation_range, f32, quantize_multiplier
from tinyexit.errors import TinyexitError


class AddOp(Op):
    LEFT_SHIFT = 20

    def check(self):
        a, b = (self.t(i) for i in self.op.inputs)
        if a.shape != b.shape or len(self.activations) != 2:
            raise TinyexitError(f"{self.graph.source}: ADD '{self.t(self.outputs[0]).name}' broadcasts or adds a "
                                f"constant; only same-shape tensors are supported")

    def definitions(self) -> str:
        a, b, out = self.t(self.op.inputs[0]), self.t(self.op.inputs[1]), self.t(self.outputs[0])
        twice_max = 2 * max(scale_of(a), scale_of(b))
        m1, s1 = quantize_multiplier(scale_of(a) / twice_max)
        m2, s2 = quantize_multiplier(scale_of(b) / twice_max)
        mo, so = quantize_multiplier(twice_max / ((1 << self.LEFT_SHIFT) * scale_of(out)))
        if max(s1, s2, so) > 0:
            raise TinyexitError(f"{self.graph.source}: ADD '{out.name}' needs a rescale above 1; not supported")
        lo, hi = activation_range(self.op.options.fusedActivationFunction, scale_of(out), zp_of(out))
        return (f"static const AddParams {self.name}_params = {{{int(np.prod(out.shape))}, {self.LEFT_SHIFT}, "
                f"{-zp_of(a)}, {m1}, {s1}, {-zp_of(b)}, {m2}, {s2}, {zp_of(out)}, {mo}, {so}, {lo}, {hi}}};\n")

    def call(self, ptr) -> str:
        a, b = self.op.inputs
        return f"add_s8({self.name}_params, {ptr(a)}, {ptr(b)}, {ptr(self.outputs[0])});"


class SoftmaxOp(Op):
    SCALED_DIFF_INTEGER_BITS = 5

    def check(self):
        out = self.t(self.outputs[0])
        if abs(scale_of(out) - 1 / 256) > 1e-9 or zp_of(out) != -128:
            raise TinyexitError(f"{self.graph.source}: SOFTMAX output '{out.name}' must be quantized with scale "
                                f"1/256 and zero point -128")

    def definitions(self) -> str:
        inp = self.t(self.op.inputs[0])
        bits = self.SCALED_DIFF_INTEGER_BITS
        beta = f32(self.op.options.beta)
        real = min(beta * scale_of(inp) * (1 << (31 - bits)), (1 << 31) - 1.0)
        multiplier, left_shift = quantize_multiplier(real)
        if real <= 1.0 or left_shift < 0:
            raise TinyexitError(f"{self.graph.source}: SOFTMAX input scale {scale_of(inp)} is too small")
        radius = ((1 << bits) - 1) * (1 << (31 - bits)) / (1 << left_shift)
        depth = inp.shape[-1]
        return (f"static const SoftmaxParams {self.name}_params = {{{int(np.prod(inp.shape)) // depth}, {depth}, "
                f"{multiplier}, {left_shift}, {-int(np.floor(radius))}}};\n")

    def call(self, ptr) -> str:
        return f"softmax_s8({self.name}_params, {ptr(self.op.inputs[0])}, {ptr(self.outputs[0])});"


OPS = {"ADD": AddOp, "SOFTMAX": SoftmaxOp}
