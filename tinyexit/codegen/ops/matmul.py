"""Matrix products other than CONV_2D / FULLY_CONNECTED: TRANSPOSE_CONV, BATCH_MATMUL
(firmware/include/tinyexit/kernels_matmul.h)."""

from __future__ import annotations

import numpy as np

from tinyexit.codegen.ops.base import Op, c_array, scale_of, shape4, zp_of
from tinyexit.codegen.ops.layout import fast_mode, gemm_filter, gemm_scratch_bytes, gemm_stream, padded_bias
from tinyexit.codegen.quantization import f32, quantize_multiplier, same_padding
from tinyexit.errors import TinyexitError


class TransposeConvOp(Op):
    """TRANSPOSE_CONV (Conv2DTranspose; Conv1DTranspose arrives between two RESHAPEs). Inputs: output shape,
    filter [out_c, kh, kw, in_c], input, optional bias. Portable kernel, and a DSP twin (one stride-1 CONV_2D
    per output phase on the DSP GEMM) when the filter is at least as large as the stride. A fused activation
    is ignored, as TFLite Micro's int8 kernel ignores it (the converter emits a separate RELU anyway)."""

    FILTER, INPUT, BIAS = 1, 2, 3
    dsp = False

    def check(self):
        w = self.t(self.op.inputs[self.FILTER])
        out = self.t(self.outputs[0])
        if w.dtype != "int8" or not w.is_constant:
            raise TinyexitError(f"{self.graph.source}: TRANSPOSE_CONV '{out.name}' needs a constant int8 filter "
                                f"(has {w.dtype}{'' if w.is_constant else ', computed'})")
        if len(self.t(self.op.inputs[self.INPUT]).shape) != 4 or len(out.shape) != 4:
            raise TinyexitError(f"{self.graph.source}: TRANSPOSE_CONV '{out.name}' must be 4-D (NHWC)")
        if w.zero_point is not None and np.any(w.zero_point != 0):
            raise TinyexitError(f"{self.graph.source}: TRANSPOSE_CONV filter '{w.name}' has nonzero zero points")
        o = self.op.options
        # the DSP twin needs every phase to have a tap (kernels_matmul.h TransposeConvDspParams)
        self.dsp = w.shape[1] >= o.strideH and w.shape[2] >= o.strideW
        self.scratch_bytes = max(gemm_scratch_bytes(sub.shape[1], run) for sub, run in self.phases()) if self.dsp else 0

    def phases(self) -> list[tuple[np.ndarray, int]]:
        """Per phase (ry, rx), row-major: the flipped sub-filter [out_c, th * tw * in_c] of taps ky = ry + j *
        stride_h, kx = rx + i * stride_w (j, i descending), and its contiguous run (tw * in_c inputs)."""
        o = self.op.options
        w = self.t(self.op.inputs[self.FILTER]).data
        out_c, kh, kw, in_c = w.shape
        result = []
        for ry in range(o.strideH):
            for rx in range(o.strideW):
                rows, cols = list(range(ry, kh, o.strideH))[::-1], list(range(rx, kw, o.strideW))[::-1]
                result.append((w[:, rows][:, :, cols].reshape(out_c, -1), len(cols) * in_c))
        return result

    def bias(self):
        i = self.op.inputs[self.BIAS] if len(self.op.inputs) > self.BIAS else -1
        return self.t(i) if i >= 0 else None

    def padding(self) -> tuple[int, int]:
        """TFLite Micro's: as for a convolution over the transposed convolution's output (its input sizes are
        the output's), then only the leading half."""
        o = self.op.options
        _, kh, kw, _ = self.t(self.op.inputs[self.FILTER]).shape
        _, out_h, out_w, _ = self.t(self.outputs[0]).shape
        if o.padding != 0:  # VALID
            return 0, 0
        return (same_padding(o.strideH, 1, out_h, kh, -(-out_h // o.strideH)),
                same_padding(o.strideW, 1, out_w, kw, -(-out_w // o.strideW)))

    def definitions(self) -> str:
        o = self.op.options
        inp, w, out = self.t(self.op.inputs[self.INPUT]), self.t(self.op.inputs[self.FILTER]), self.t(self.outputs[0])
        # per channel, as TFLite Micro's PopulateConvolutionQuantizationParams (in double)
        scales = np.broadcast_to(w.scale, (w.shape[0],))
        mults = [quantize_multiplier(scale_of(inp) * f32(s) / scale_of(out)) for s in scales]
        pad_h, pad_w = self.padding()
        n = self.name
        bias = self.bias()
        text = "#if !TX_DSP_KERNELS\n" if self.dsp else ""
        text += c_array("int8_t", f"{n}_filter", w.data)
        text += c_array("int32_t", f"{n}_bias", bias.data) if bias is not None else ""
        text += "#endif\n" if self.dsp else ""
        text += c_array("int32_t", f"{n}_mult", np.array([m for m, _ in mults]))
        text += c_array("int32_t", f"{n}_shift", np.array([s for _, s in mults]))
        text += (f"static const TransposeConvParams {n}_params = {{{shape4(inp)}, {shape4(w)}, {shape4(out)}, "
                 f"{o.strideH}, {o.strideW}, {pad_h}, {pad_w}, {-zp_of(inp)}, {zp_of(out)}, {n}_mult, {n}_shift}};\n")
        if self.dsp:
            text += "#if TX_DSP_KERNELS\n" + self.dsp_definitions(mults) + "#endif\n"
        return text

    def dsp_definitions(self, mults: list[tuple[int, int]]) -> str:
        """One GemmDspParams per phase. The short requantization's proof (layout.fast_mode) is made on the
        whole filter, whose bound holds for every phase's sub-filter: one mode and table for all."""
        w = self.t(self.op.inputs[self.FILTER]).data
        out_c = w.shape[0]
        bias = self.bias()
        bias = np.zeros(out_c, np.int64) if bias is None else bias.data.astype(np.int64)
        mode, table = fast_mode(w.reshape(out_c, -1), bias, mults)
        n = self.name
        streamed = mode == 1 and out_c % 2 == 0
        text = ""
        if not streamed:
            text += c_array("int32_t", f"{n}_bias32", padded_bias(bias))
            text += c_array("int32_t", f"{n}_fastq", np.array(table, np.int32).reshape(-1)) if mode else ""
        rows = []
        for i, (sub, run) in enumerate(self.phases()):
            words, k_padded = gemm_filter(sub, run)
            if streamed:
                text += c_array("uint32_t", f"{n}_stream{i}", gemm_stream(sub, bias, table, run))
                rows.append(f"{{{sub.shape[1]}, {k_padded}, nullptr, nullptr, nullptr, {mode}, {n}_stream{i}}}")
            else:
                text += c_array("uint32_t", f"{n}_filter16_{i}", words)
                fast = f"{n}_fastq" if mode else "nullptr"
                rows.append(f"{{{sub.shape[1]}, {k_padded}, {fast}, {n}_filter16_{i}, {n}_bias32, {mode}, nullptr}}")
        return (text + f"static const GemmDspParams {n}_phases[] = {{{', '.join(rows)}}};\n"
                f"static const TransposeConvDspParams {n}_dsp = {{{n}_phases, {mode}}};\n")

    def call(self, ptr) -> str:
        n = self.name
        bias = f"{n}_bias" if self.bias() is not None else "nullptr"
        inp, out = ptr(self.op.inputs[self.INPUT]), ptr(self.outputs[0])
        portable = f"transpose_conv_s8({n}_params, {inp}, {n}_filter, {bias}, {out});"
        if not self.dsp:
            return portable
        return (f"\n#if TX_DSP_KERNELS\n  dsp::transpose_conv_s8({n}_params, {n}_dsp, {inp}, {out}, {self.scratch});"
                f"\n#else\n  {portable}\n#endif")


class BatchMatmulOp(Op):
    """BATCH_MATMUL of two int8 tensors (activations or constants, per-tensor quantized), 2 to 5 dimensions,
    batch dimensions broadcast as numpy does, either operand transposed (adj_x, adj_y)."""

    def check(self):
        out = self.t(self.outputs[0])
        for i in self.op.inputs:
            t = self.t(i)
            if t.dtype != "int8" or t.scale is None or len(t.scale) != 1:
                raise TinyexitError(f"{self.graph.source}: BATCH_MATMUL '{out.name}' operand '{t.name}' must be "
                                    f"int8 with one scale (is {t.dtype}, per-channel or unquantized)")
            if not 2 <= len(t.shape) <= 5:
                raise TinyexitError(f"{self.graph.source}: BATCH_MATMUL '{out.name}' operand '{t.name}' has "
                                    f"{len(t.shape)} dimensions; 2 to 5 are supported")

    def layout(self) -> dict:
        """Batch dimensions and element strides of both operands (kernels_matmul.h BatchMatmulParams)."""
        lhs, rhs = (self.t(i).shape for i in self.op.inputs)
        adj_x, adj_y = bool(self.op.options.adjX), bool(self.op.options.adjY)
        lhs5, rhs5 = (1,) * (5 - len(lhs)) + tuple(lhs), (1,) * (5 - len(rhs)) + tuple(rhs)
        rows, depth = (lhs5[4], lhs5[3]) if adj_x else (lhs5[3], lhs5[4])
        cols = rhs5[3] if adj_y else rhs5[4]
        if (rhs5[4] if adj_y else rhs5[3]) != depth:
            raise TinyexitError(f"{self.graph.source}: BATCH_MATMUL '{self.t(self.outputs[0]).name}': inner "
                                f"dimensions differ ({lhs} x {rhs})")
        batch, lhs_strides, rhs_strides = [], [], []
        lhs_size, rhs_size = lhs5[3] * lhs5[4], rhs5[3] * rhs5[4]
        lhs_step = [int(np.prod(lhs5[d + 1:3])) * lhs_size for d in range(3)]
        rhs_step = [int(np.prod(rhs5[d + 1:3])) * rhs_size for d in range(3)]
        for d in range(3):
            a, b = lhs5[d], rhs5[d]
            if a != b and 1 not in (a, b):
                raise TinyexitError(f"{self.graph.source}: BATCH_MATMUL '{self.t(self.outputs[0]).name}': batch "
                                    f"dimensions {lhs} and {rhs} do not broadcast")
            batch.append(max(a, b))
            lhs_strides.append(0 if a == 1 else lhs_step[d])
            rhs_strides.append(0 if b == 1 else rhs_step[d])
        return dict(batch=batch, lhs_batch_stride=lhs_strides, rhs_batch_stride=rhs_strides,
                    rows=rows, cols=cols, depth=depth,
                    lhs_row_stride=1 if adj_x else depth, lhs_depth_stride=rows if adj_x else 1,
                    rhs_depth_stride=1 if adj_y else cols, rhs_col_stride=depth if adj_y else 1)

    def definitions(self) -> str:
        lhs, rhs = (self.t(i) for i in self.op.inputs)
        out = self.t(self.outputs[0])
        g = self.layout()
        if int(np.prod(out.shape)) != int(np.prod(g["batch"])) * g["rows"] * g["cols"]:
            raise TinyexitError(f"{self.graph.source}: BATCH_MATMUL '{out.name}' output shape {out.shape} does not "
                                f"match its operands {lhs.shape} x {rhs.shape}")
        # TFLite's GetQuantizedConvolutionMultipler: the scales' product in float32, then double
        product = f32(np.float32(lhs.scale[0]) * np.float32(rhs.scale[0]))
        multiplier, shift = quantize_multiplier(product / scale_of(out))
        text = "".join(c_array("int8_t", f"{self.name}_{side}", t.data)
                       for side, t in (("lhs", lhs), ("rhs", rhs)) if t.is_constant)

        def triple(v):
            return "{" + ", ".join(map(str, v)) + "}"

        return text + (f"static const BatchMatmulParams {self.name}_params = {{{triple(g['batch'])}, "
                       f"{triple(g['lhs_batch_stride'])}, {triple(g['rhs_batch_stride'])}, {g['rows']}, {g['cols']}, "
                       f"{g['depth']}, {g['lhs_row_stride']}, {g['lhs_depth_stride']}, {g['rhs_depth_stride']}, "
                       f"{g['rhs_col_stride']}, {-zp_of(lhs)}, {-zp_of(rhs)}, {zp_of(out)}, {multiplier}, {shift}}};\n")

    def call(self, ptr) -> str:
        l, r = self.op.inputs
        lhs = f"{self.name}_lhs" if self.t(l).is_constant else ptr(l)
        rhs = f"{self.name}_rhs" if self.t(r).is_constant else ptr(r)
        return f"batch_matmul_s8({self.name}_params, {lhs}, {rhs}, {ptr(self.outputs[0])});"


OPS = {"TRANSPOSE_CONV": TransposeConvOp, "BATCH_MATMUL": BatchMatmulOp}
