"""Pooling: AVERAGE_POOL_2D (portable and DSP), MAX_POOL_2D, MEAN over height and width."""

from __future__ import annotations

from tinyexit.codegen.ops.base import Op, scale_of, shape4, zp_of
from tinyexit.codegen.quantization import activation_range, quantize_multiplier, same_padding
from tinyexit.errors import TinyexitError


class PoolOp(Op):
    kernel = "avg_pool_s8"

    def check(self):
        inp, out = self.t(self.op.inputs[0]), self.t(self.op.outputs[0])
        if (scale_of(inp), zp_of(inp)) != (scale_of(out), zp_of(out)):
            raise TinyexitError(f"{self.graph.source}: {self.op.op} '{out.name}' requantizes; not supported")

    def definitions(self) -> str:
        o = self.op.options
        inp, out = self.t(self.op.inputs[0]), self.t(self.op.outputs[0])
        _, in_h, in_w, _ = inp.shape
        _, out_h, out_w, _ = out.shape
        same = o.padding == 0
        pad_h = same_padding(o.strideH, 1, in_h, o.filterHeight, out_h) if same else 0
        pad_w = same_padding(o.strideW, 1, in_w, o.filterWidth, out_w) if same else 0
        lo, hi = activation_range(o.fusedActivationFunction, scale_of(out), zp_of(out))
        return (f"static const PoolParams {self.name}_params = {{{shape4(inp)}, {shape4(out)}, {o.filterHeight}, "
                f"{o.filterWidth}, {o.strideH}, {o.strideW}, {pad_h}, {pad_w}, {lo}, {hi}}};\n")

    def call(self, ptr) -> str:
        args = f"({self.name}_params, {ptr(self.op.inputs[0])}, {ptr(self.outputs[0])});"
        if not self.dsp:
            return self.kernel + args
        return f"\n#if TX_DSP_KERNELS\n  dsp::{self.kernel}{args}\n#else\n  {self.kernel}{args}\n#endif"

    @property
    def dsp(self) -> bool:
        return self.t(self.op.inputs[0]).shape[3] % 4 == 0


class MaxPoolOp(PoolOp):
    kernel = "max_pool_s8"
    dsp = False


class MeanOp(Op):
    """MEAN over axes 1 and 2 of an NHWC tensor, as TFLite Micro's integer QuantizedMeanOrSum (kernels/mean_s8.cc)."""

    def check(self):
        inp, out = self.t(self.op.inputs[0]), self.t(self.outputs[0])
        axes = self.t(self.op.inputs[1])
        if len(inp.shape) != 4 or not axes.is_constant or sorted(int(a) % 4 for a in axes.data.reshape(-1)) != [1, 2]:
            raise TinyexitError(f"{self.graph.source}: MEAN '{out.name}' must average axes 1 and 2 of a 4-D tensor")

    def definitions(self) -> str:
        inp, out = self.t(self.op.inputs[0]), self.t(self.outputs[0])
        count = inp.shape[1] * inp.shape[2]
        multiplier, shift = quantize_multiplier(scale_of(inp) / scale_of(out))
        # TFLite Micro folds 1/count into the multiplier: scaled up by 2^k (k = floor(log2 count), at most 32 and
        # 31 + shift), divided by count with truncation
        k = min(count.bit_length() - 1, 32, 31 + shift)
        multiplier, shift = (multiplier << k) // count, shift - k
        return (f"static const MeanParams {self.name}_params = {{{shape4(inp)}, {zp_of(inp)}, {zp_of(out)}, "
                f"{multiplier}, {shift}}};\n")

    def call(self, ptr) -> str:
        return f"mean_s8({self.name}_params, {ptr(self.op.inputs[0])}, {ptr(self.outputs[0])});"


OPS = {"AVERAGE_POOL_2D": PoolOp, "MAX_POOL_2D": MaxPoolOp, "MEAN": MeanOp}
