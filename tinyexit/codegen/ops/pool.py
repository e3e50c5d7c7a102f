"""Pooling: AVERAGE_POOL_2D (portable and DSP), MAX_POOL_2D, and the reductions global pooling lowers to:
MEAN, SUM, REDUCE_MAX over any axes (kernels/mean_s8.cc, reduce_max_s8.cc)."""

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


class ReduceOp(Op):
    """A reduction over constant axes (MEAN, SUM, REDUCE_MAX), its input seen as [d0, d1, d2, d3, d4] with d1
    and d3 reduced (kernels_matmul.h ReduceParams): neighbouring axes merge, so any axis set whose reduced axes
    form at most two runs fits, keepdims or not."""

    kernel = ""
    max_axes = 2  # TFLite Micro's MEAN and SUM resolve at most two axes (kMaxNumberOfReducedAxis)

    def check(self):
        self.dims = self.five_dims()

    def axes(self) -> list[int]:
        inp, axes = self.t(self.op.inputs[0]), self.t(self.op.inputs[1])
        if not axes.is_constant:
            raise TinyexitError(f"{self.graph.source}: {self.op.op} '{self.t(self.outputs[0]).name}' has computed "
                                f"axes; only constant ones are supported")
        rank = len(inp.shape)
        return sorted({int(a) % rank for a in axes.data.reshape(-1)}) if rank else []

    def five_dims(self) -> list[int]:
        inp, out = self.t(self.op.inputs[0]), self.t(self.outputs[0])
        axes = self.axes()
        if len(axes) > self.max_axes:
            raise TinyexitError(f"{self.graph.source}: {self.op.op} '{out.name}' reduces {len(axes)} axes; TFLite "
                                f"Micro reduces at most {self.max_axes}")
        # slots alternate kept (even) and reduced (odd), filled from the innermost axis: a single run of
        # reduced axes lands in d3, the kernel's tight inner loop
        dims, slot = [1] * 5, 4
        for axis in reversed(range(len(inp.shape))):
            size, reduced = inp.shape[axis], axis in axes
            if size == 1:
                continue
            if slot % 2 != reduced:
                slot -= 1
            if slot < 0:
                raise TinyexitError(f"{self.graph.source}: {self.op.op} '{out.name}' reduces axes {axes} of shape "
                                    f"{inp.shape}: more than two separate runs of axes")
            dims[slot] *= size
        return dims

    def params(self, multiplier: int = 0, shift: int = 0) -> str:
        inp, out = self.t(self.op.inputs[0]), self.t(self.outputs[0])
        return (f"static const ReduceParams {self.name}_params = {{{{{', '.join(map(str, self.dims))}}}, "
                f"{zp_of(inp)}, {zp_of(out)}, {multiplier}, {shift}}};\n")

    def same_quantization(self) -> bool:
        inp, out = self.t(self.op.inputs[0]), self.t(self.outputs[0])
        return (scale_of(inp), zp_of(inp)) == (scale_of(out), zp_of(out))

    def call(self, ptr) -> str:
        return f"{self.kernel}({self.name}_params, {ptr(self.op.inputs[0])}, {ptr(self.outputs[0])});"


class MeanOp(ReduceOp):
    """MEAN (GlobalAveragePooling1D/2D, keras.ops.mean): TFLite Micro's QuantizedMeanOrSum with the 1/count
    folded into the multiplier, whether or not input and output are quantized alike (this TFLite Micro has no
    plain-average shortcut for equal quantization any more; the tests pin it)."""

    kernel = "mean_s8"

    def definitions(self) -> str:
        inp, out = self.t(self.op.inputs[0]), self.t(self.outputs[0])
        count = self.dims[1] * self.dims[3]
        multiplier, shift = quantize_multiplier(scale_of(inp) / scale_of(out))
        # scaled up by 2^k (k = floor(log2 count), at most 32 and 31 + shift), divided by count, truncated
        k = min(count.bit_length() - 1, 32, 31 + shift)
        return self.params((multiplier << k) // count, shift - k)


class SumOp(ReduceOp):
    """SUM: TFLite Micro's QuantizedMeanOrSum without the division."""

    kernel = "sum_s8"

    def definitions(self) -> str:
        inp, out = self.t(self.op.inputs[0]), self.t(self.outputs[0])
        return self.params(*quantize_multiplier(scale_of(inp) / scale_of(out)))


class ReduceMaxOp(ReduceOp):
    """REDUCE_MAX (GlobalMaxPooling1D/2D)."""

    kernel = "reduce_max_s8"
    max_axes = 5  # TFLite Micro sizes REDUCE_MAX's axis buffer to the axes given

    def check(self):
        super().check()
        if not self.same_quantization():
            raise TinyexitError(f"{self.graph.source}: REDUCE_MAX '{self.t(self.outputs[0]).name}' requantizes; "
                                f"TFLite Micro requires equal input and output quantization")

    def definitions(self) -> str:
        return self.params()


OPS = {"AVERAGE_POOL_2D": PoolOp, "MAX_POOL_2D": MaxPoolOp, "MEAN": MeanOp, "SUM": SumOp,
       "REDUCE_MAX": ReduceMaxOp}
