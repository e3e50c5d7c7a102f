"""Operators with filters (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED); how their filters are laid out in
flash is layout.py's."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinyexit.codegen.ops.base import Op, c_array, scale_of, shape4, zp_of
from tinyexit.codegen.ops.layout import (rounding_offset, QUARTER, fast_mode, GROUP_ORDER, gemm_products,
                                        gemm_filter16, gemm_rows, gemm_filter, gemm_stream, gemm_stream6,
                                        stream_words, SUBBYTE_RANGES, unpacked_values, fitting_bits, packed_nbytes,
                                        pack_values, pack_pair_words, packed_dsp_exact, align8, gemm_scratch_bytes,
                                        padded_bias)
from tinyexit.codegen.quantization import (activation_range, f32, multiply_by_quantized_multiplier, quantize_multiplier,
                                           same_padding)
from tinyexit.errors import TinyexitError
from tinyexit.tflite_graph import Graph, Operator, Tensor


class FastRequant(NamedTuple):
    """Op.fast_requant's answer: the table's C definition and name ("nullptr" when none), fast_mode, the
    biases the DSP kernels start from, and the table's [multiplier, shift code] rows."""
    definition: str
    table: str
    mode: int
    bias: np.ndarray
    rows: list[list[int]]


class WeightedOp(Op):
    """An operator with a filter (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED): 8-, 4- or 2-bit weights, a
    portable kernel and a DSP twin."""

    def weight_bytes(self) -> int:
        total = super().weight_bytes()
        if self.bits < 8:  # the filter is stored packed
            w = self.t(self.op.inputs[1])
            total += packed_nbytes(w.data.size, self.bits) - w.data.nbytes
        return total

    def choose_bits(self, w: Tensor) -> None:
        """The filter's width: the manifest's, else the narrowest range its values fit; packed kernels then."""
        values = unpacked_values(w)
        bits = self.weight_bits or fitting_bits(values)
        if w.dtype == "int4" and bits == 8:  # TFLite's own packed INT4: 4 bits at most
            bits = fitting_bits(values) if fitting_bits(values) < 8 else 4
        if bits < 8:
            lo, hi = SUBBYTE_RANGES.get(bits, (0, -1))
            if lo > hi or values.min() < lo or values.max() > hi:
                raise TinyexitError(f"{self.graph.source}: {self.op.op} filter '{w.name}' is declared {bits}-bit but "
                                    f"holds values in [{values.min()}, {values.max()}]")
            self.kernel = self.kernel.replace("_s8", "_packed_s8")
        self.bits = bits

    def weight_arrays(self, w: Tensor, bias: Tensor | None, mults: list[tuple[int, int]]) -> str:
        """Filter, optional bias and per-channel requantization as const arrays `<name>_filter` etc."""
        n = self.name
        self.has_bias = bias is not None
        text = "#if !TX_DSP_KERNELS\n" if self.dsp else ""
        if self.bits < 8:
            text += c_array("uint8_t", f"{n}_filter", pack_values(unpacked_values(w), self.bits))
            text += f"static const PackedWeights {n}_packed = {{{n}_filter, {self.bits}}};\n"
        else:
            text += c_array("int8_t", f"{n}_filter", w.data)
        text += c_array("int32_t", f"{n}_bias", bias.data) if bias is not None else ""
        text += "#endif\n" if self.dsp else ""
        # the DSP kernels read the layer's own multipliers only for the reference requantization (fast_mode 0)
        portable_only = self.dsp and self.dsp_mode != 0
        text += "#if !TX_DSP_KERNELS\n" if portable_only else ""
        text += c_array("int32_t", f"{n}_mult", np.array([m for m, _ in mults]))
        text += c_array("int32_t", f"{n}_shift", np.array([s for _, s in mults]))
        return text + ("#endif\n" if portable_only else "")

    def params(self, struct: str, fields: str) -> str:
        """The portable parameter struct `<name>_params` = {fields, multipliers, shifts}; without the multipliers
        in DSP builds whose kernel does not read them (weight_arrays)."""
        n = self.name
        def line(requant: str) -> str:
            return f"static const {struct} {n}_params = {{{fields}, {requant}}};\n"
        if self.dsp and self.dsp_mode != 0:
            return "#if TX_DSP_KERNELS\n" + line("nullptr, nullptr") + "#else\n" + line(f"{n}_mult, {n}_shift") + "#endif\n"
        return line(f"{n}_mult, {n}_shift")

    dsp_mode = 0  # the DSP definitions' fast_mode (set before weight_arrays)

    stream_split = (0, 0, 0)  # a DSP stream's bytes of weights, biases and requantization constants
    generated = None  # definitions(), made once (report() reads them too)

    def dsp_flash(self) -> dict[str, int]:
        """What the DSP build holds in flash for this layer, by kind: "weights" and "biases" (as the DSP kernels
        store them) and "requantization" (multipliers, shifts and rounding offsets, routine tables), from the
        arrays of its DSP definitions (streams split by their layout)."""
        import re

        text = self.definitions()
        dsp = "".join(re.findall(r"#if TX_DSP_KERNELS\n(.*?)#endif", text, re.S))
        flash = {"weights": 0, "biases": 0, "requantization": 0}
        sizes = {"int8_t": 1, "uint8_t": 1, "int32_t": 4, "uint32_t": 4}
        for ctype, suffix, count in re.findall(rf"static const (\w+) {self.name}_(\w+)\[(\d+)\]", dsp):
            nbytes = sizes[ctype] * int(count)
            if suffix == "stream":
                for kind, part in zip(flash, self.stream_split):
                    flash[kind] += part
            elif suffix in ("filter4", "filter8", "taps"):
                flash["weights"] += nbytes
            elif suffix == "bias32":
                flash["biases"] += nbytes
            elif suffix == "quant":  # [2 * bias, multiplier, rounding offset] per channel
                flash["biases"] += nbytes // 3
                flash["requantization"] += nbytes - nbytes // 3
            else:  # fastq, variant, padding, mult/shift
                flash["requantization"] += nbytes
        for struct in re.findall(r"static const (?:DepthwiseStripFn|Stream6Segment) \w+\[\] = \{(.*)\};", dsp):
            flash["requantization"] += 4 * (struct.count("dsp::") * (1 if "{" not in struct else 3))
        if self.dsp_mode == 0:  # the reference requantization reads the portable multipliers and shifts
            flash["requantization"] += 8 * self.t(self.outputs[0]).shape[-1]
        return flash

    def report(self) -> dict:
        r = super().report()
        if self.dsp:
            flash = self.dsp_flash()
            r["dsp_weight_bytes"] = flash["weights"] + flash["biases"]
            r["dsp_requantization_bytes"] = flash["requantization"]
        return r

    def weighted_call(self, ptr) -> str:
        n = self.name
        bias = f"{n}_bias" if self.has_bias else "nullptr"
        filter_ = f"{n}_packed" if self.bits < 8 else f"{n}_filter"
        if self.in_place:
            portable = (f"{self.kernel.replace('_s8', '_in_place_s8')}({n}_params, {ptr(self.outputs[0])}, {filter_}, "
                        f"{bias}, static_cast<int8_t*>({self.scratch}));")
        else:
            portable = f"{self.kernel}({n}_params, {ptr(self.op.inputs[0])}, {filter_}, {bias}, {ptr(self.outputs[0])});"
        if not self.dsp:
            return portable
        scratch = f", {self.scratch}" if self.dsp_scratch_bytes else ""
        kernel = self.dsp_kernel or self.kernel
        return (f"\n#if TX_DSP_KERNELS\n  dsp::{kernel}{self.dsp_template}({n}_params, {n}_dsp, {ptr(self.op.inputs[0])}, "
                f"{ptr(self.outputs[0])}{scratch});\n#else\n  {portable}\n#endif")

    dsp = False  # set by check() when a DSP variant exists for this op's shapes
    dsp_scratch_bytes = 0  # the DSP kernel's scratch (scratch_bytes: the larger of it and the in-place kernel's)
    dsp_kernel = ""  # the DSP kernel's name where it is not the portable one's
    dsp_template = ""  # the DSP kernel's template arguments (packed_template, the int8 stream's group count)

    def packed_template(self, mode: int, taps: int | None = None) -> str:
        """Template arguments of the sub-byte DSP kernel this layer calls (kernels.h): bits, [unrolled taps,]
        fast_mode, whether the activation clamps below int8's range (as gemm.h's with_requantizer decides)."""
        out = self.t(self.outputs[0])
        lo, hi = activation_range(self.op.options.fusedActivationFunction, scale_of(out), zp_of(out))
        args = [self.bits] + ([taps] if taps is not None else []) + [mode, "true" if lo > -128 or hi < 127 else "false"]
        return "<" + ", ".join(map(str, args)) + ">"

    def fast_requant(self, w: np.ndarray, bias: np.ndarray | None, mults: list[tuple[int, int]]) -> FastRequant:
        """The DSP kernels' `fast_requant` table and `fast_mode` (kernels.h), as FastRequant,
        where dsp.h's short requantization equals the reference for every possible input (|input + offset| <= 255):
        mode 1 when every channel shifts right (shift <= -1) and its accumulator stays below 2^30 in magnitude,
        [multiplier, ~shift] per channel; mode 2 when every channel shifts left (shift >= 0) and its accumulator
        times 2^(shift + 1) stays below 2^31, [multiplier, shift + 1]; mode 3 when channels of both kinds each
        meet their bound, left shifts stored as ~(shift + 1); else no table (nullptr, mode 0: the kernels then
        requantize the reference way). Its `bias` is what the DSP kernels must start from (constant_channels
        may replace some entries). w: [channels, products]."""
        bias = np.zeros(len(w), np.int64) if bias is None else np.asarray(bias, np.int64)
        settled_bias, settled_mults = self.constant_channels(w, bias, mults) or (bias, mults)
        mode, table = fast_mode(w, settled_bias, settled_mults)
        if mode == 0:  # the reference path reads the layer's own multipliers: it keeps its own biases too
            return FastRequant("", "nullptr", 0, bias, [])
        return FastRequant(c_array("int32_t", f"{self.name}_fastq", np.array(table, np.int32).reshape(-1)),
                           f"{self.name}_fastq", mode, settled_bias, table)

    def constant_channels(self, w: np.ndarray, bias: np.ndarray,
                          mults: list[tuple[int, int]]) -> tuple[np.ndarray, list[tuple[int, int]]] | None:
        """Channels whose weights are all zero output one constant whatever the input. TFLite's converter gives
        such dead channels biases near 2^30, which keep a whole layer off the short requantization; for the DSP
        kernels they get bias 4 * (constant - output zero point) and the multiplier 1/4 instead, which give the
        same constant. (bias, multipliers) so settled, or None when no channel needs it."""
        out = self.t(self.outputs[0])
        lo, hi = activation_range(self.op.options.fusedActivationFunction, scale_of(out), zp_of(out))
        dead = np.flatnonzero(~np.any(w != 0, axis=1))
        if len(dead) == 0:
            return None
        bias, mults = bias.copy(), list(mults)
        for ch in dead:
            constant = min(max(multiply_by_quantized_multiplier(int(bias[ch]), *mults[ch]) + zp_of(out), lo), hi)
            bias[ch], mults[ch] = 4 * (constant - zp_of(out)), QUARTER
            assert multiply_by_quantized_multiplier(int(bias[ch]), *QUARTER) + zp_of(out) == constant
        return bias, mults

    def gemm_dsp_definitions(self, w: np.ndarray, bias: Tensor | None, mults, run_bytes: int) -> str:
        """GemmDspParams (GemmPackedDspParams) for CONV_2D and FULLY_CONNECTED; w: [channels, products];
        run_bytes: see gemm_rows."""
        fq = self.fast_requant(w, bias.data if bias is not None else None, mults)
        table, fast, mode, bias = fq.definition, fq.table, fq.mode, fq.bias
        self.dsp_mode = mode
        n = self.name
        if self.bits < 8:
            words, k_padded = gemm_filter16(w, run_bytes)
            self.dsp_template = self.packed_template(mode)
            if mode == 1 and w.shape[0] % 2 == 0:
                packed = pack_pair_words(words, self.bits).reshape(w.shape[0] // 2, -1)
                self.stream_split = (4 * packed.size, 4 * len(w), 8 * len(w))
                stream = stream_words(bias.astype(np.int64) << (16 - self.bits), packed, fq.rows)
                return (c_array("uint32_t", f"{n}_stream", stream) +
                        f"static const GemmPackedDspParams {n}_dsp = {{{w.shape[1]}, {k_padded}, {self.bits}, "
                        f"nullptr, nullptr, nullptr, {mode}, {n}_stream}};\n")
            return (c_array("uint32_t", f"{n}_filter4", pack_pair_words(words, self.bits)) +
                    c_array("int32_t", f"{n}_bias32", padded_bias(bias) << (16 - self.bits)) + table +
                    f"static const GemmPackedDspParams {n}_dsp = {{{w.shape[1]}, {k_padded}, "
                    f"{self.bits}, {fast}, {n}_filter4, {n}_bias32, {mode}}};\n")
        if self.stream6:
            rows = gemm_rows(w, run_bytes)
            stream, segments = gemm_stream6(rows, bias, fq.rows, self.output_zero_point())
            out_c = len(rows)
            self.stream_split = (rows.size, 4 * out_c, 8 * out_c)  # weights, 2 * bias, multiplier and channel
            self.dsp_kernel = "conv_stream_s8"
            entries = ", ".join(f"{{dsp::gemm_stream6<{rows.shape[1] // 4}, {e}, {out_c}>, {count}, {rounding}}}"
                                for e, count, rounding in segments)
            return (c_array("uint32_t", f"{n}_stream", stream) +
                    f"static const Stream6Segment {n}_segments[] = {{{entries}}};\n"
                    f"static const GemmDspParams {n}_dsp = {{{w.shape[1]}, {rows.shape[1]}, nullptr, nullptr, nullptr, "
                    f"{mode}, {n}_stream, {n}_segments, {len(segments)}, {self.padded_bytes}}};\n")
        if mode == 1 and w.shape[0] % 2 == 0:  # the two-pixel stream
            _, k_padded = gemm_filter(w, run_bytes)
            self.stream_split = (len(w) * k_padded, 4 * len(w), 8 * len(w))
            return (c_array("uint32_t", f"{n}_stream", gemm_stream(w, bias, fq.rows, run_bytes)) +
                    f"static const GemmDspParams {n}_dsp = {{{w.shape[1]}, {k_padded}, nullptr, nullptr, nullptr, "
                    f"{mode}, {n}_stream, nullptr, 0, 0}};\n")
        words, k_padded = gemm_filter(w, run_bytes)
        return (c_array("uint32_t", f"{n}_filter8", words) + c_array("int32_t", f"{n}_bias32", padded_bias(bias)) +
                table + f"static const GemmDspParams {n}_dsp = {{{w.shape[1]}, {k_padded}, "
                f"{fast}, {n}_filter8, {n}_bias32, {mode}, nullptr, nullptr, 0, 0}};\n")

    stream6 = False  # CONV_2D on the int8 stream (gemm_stream.h), decided by check()

    def output_zero_point(self) -> int:
        return zp_of(self.t(self.outputs[0]))

    def clamps(self) -> bool:
        """Whether the fused activation clamps inside int8's range (the streams' requantization does not)."""
        out = self.t(self.outputs[0])
        lo, hi = activation_range(self.op.options.fusedActivationFunction, scale_of(out), zp_of(out))
        return lo > -128 or hi < 127

    def takes_stream6(self, w: np.ndarray, bias: np.ndarray | None, mults: list[tuple[int, int]], run_bytes: int) -> bool:
        """The six-pixel stream's conditions (tinyexit/dsp_streams.h gemm_stream6): int8 weights, fast_mode 1,
        no clamp, at most MAX_STREAM6_GROUPS groups, outputs 5 * out_c bytes apart at most 4095 (immediate
        offsets), and every channel's rounding offset (1 + 2 * zero point) << ~shift below 2^30."""
        if (self.bits != 8 or self.clamps() or gemm_products(w.shape[1], run_bytes) > 4 * MAX_STREAM6_GROUPS
                or 5 * w.shape[0] > 4095):
            return False
        fq = self.fast_requant(w, bias, mults)
        return fq.mode == 1 and all(abs(rounding_offset(self.output_zero_point(), e1)) < (1 << 30) - 1
                                    for _, e1 in fq.rows)


MAX_STREAM6_GROUPS = 64  # unrolled: k_padded <= 256


def _bias_data(op: Operator, graph: Graph) -> np.ndarray | None:
    i = op.inputs[2] if len(op.inputs) > 2 else -1
    return graph.tensors[i].data if i >= 0 else None


class ConvOp(WeightedOp):
    kernel = "conv_s8"
    merges_rows = True  # CONV_2D sums over a whole row's width and channels alike (not DEPTHWISE_CONV_2D)

    def geometry(self) -> dict:
        """Shapes, strides, dilations and padding as the kernel gets them. A CONV_2D whose filter spans the
        input's whole width without padding (1-D models written as (k x 1) convolutions) is given as its
        transpose over the same bytes: height as width, a row's width x channels as channels. Then the rows
        of a receptive field are one contiguous run, which the DSP kernels gather as whole words (one run of
        k * C bytes instead of k runs of C, each padded to a word)."""
        o = self.op.options
        inp, w, out = self.t(self.op.inputs[0]), self.t(self.op.inputs[1]), self.t(self.op.outputs[0])
        n, in_h, in_w, in_c = [1] * (4 - len(inp.shape)) + list(inp.shape)
        _, out_h, out_w, out_c = out.shape
        oc, kh, kw, wc = w.shape
        dh, dw = getattr(o, "dilationHFactor", 1) or 1, getattr(o, "dilationWFactor", 1) or 1
        same = o.padding == 0
        pad_h = same_padding(o.strideH, dh, in_h, kh, out_h) if same else 0
        pad_w = same_padding(o.strideW, dw, in_w, kw, out_w) if same else 0
        g = dict(input=(n, in_h, in_w, in_c), filter=(oc, kh, kw, wc), output=(n, out_h, out_w, out_c),
                 stride=(o.strideH, o.strideW), dilation=(dh, dw), pad=(pad_h, pad_w))
        if self.merges_rows and kw == in_w and out_w == 1 and pad_w == 0 and dw == 1 and kh > 1:
            g = dict(input=(n, 1, in_h, in_w * in_c), filter=(oc, 1, kh, kw * wc), output=(n, 1, out_h, out_c),
                     stride=(1, o.strideH), dilation=(1, dh), pad=(0, pad_h))
        return g

    def multipliers(self) -> list[tuple[int, int]]:
        """(multiplier, shift) per output channel: input scale x filter scale / output scale."""
        inp, w, out = self.t(self.op.inputs[0]), self.t(self.op.inputs[1]), self.t(self.op.outputs[0])
        scales = np.broadcast_to(w.scale, (self.geometry()["output"][3],))
        return [quantize_multiplier(scale_of(inp) * f32(s) / scale_of(out)) for s in scales]

    def definitions(self) -> str:
        if self.generated is None:
            self.generated = self.generate_definitions()
        return self.generated

    def generate_definitions(self) -> str:
        o = self.op.options
        inp, w, out = self.t(self.op.inputs[0]), self.t(self.op.inputs[1]), self.t(self.op.outputs[0])
        bias = self.t(self.op.inputs[2]) if len(self.op.inputs) > 2 and self.op.inputs[2] >= 0 else None
        g = self.geometry()
        mults = self.multipliers()
        lo, hi = activation_range(o.fusedActivationFunction, scale_of(out), zp_of(out))
        dm = getattr(o, "depthMultiplier", 1) or 1
        dsp = "#if TX_DSP_KERNELS\n" + self.dsp_definitions(w, bias, mults) + "#endif\n" if self.dsp else ""
        text = self.weight_arrays(w, bias, mults)
        text += self.params("ConvParams", f"{shape4(g['input'])}, {shape4(g['filter'])}, {shape4(g['output'])}, "
                            f"{g['stride'][0]}, {g['stride'][1]}, {g['dilation'][0]}, {g['dilation'][1]}, {g['pad'][0]}, "
                            f"{g['pad'][1]}, {dm}, {-zp_of(inp)}, {zp_of(out)}, {lo}, {hi}")
        return text + dsp

    def check(self):
        w = self.t(self.op.inputs[1])
        if w.dtype not in ("int8", "int4") or not w.is_constant:
            raise TinyexitError(f"{self.graph.source}: {self.op.op} filter '{w.name}' is {w.dtype}; int8 expected")
        self.choose_bits(w)
        self.dsp = self.bits == 8 or packed_dsp_exact(unpacked_values(w).reshape(w.shape[0], -1), 255, self.bits,
                                                      _bias_data(self.op, self.graph))
        k = int(np.prod(w.shape[1:]))
        # the inputs contiguous in memory: a filter row, or one tap when the filter is dilated horizontally
        g = self.geometry()
        _, _, kw, channels = g["filter"]
        self.run_bytes = channels * (kw if g["dilation"][1] == 1 else 1)
        self.scratch_bytes = gemm_scratch_bytes(k, self.run_bytes) if self.dsp else 0
        if self.dsp and self.bits == 8:
            self.stream6 = self.takes_stream6(w.data.reshape(w.shape[0], -1), _bias_data(self.op, self.graph),
                                              self.multipliers(), self.run_bytes)
            if self.stream6:  # six pixels' columns, where it is small a padded copy of the input, and the
                # last pixels' outputs when fewer than six
                _, out_h, out_w, out_c = g["output"]
                pixels = g["output"][0] * out_h * out_w
                self.padded_bytes = self.padded_copy_bytes()
                self.scratch_bytes = (12 * gemm_products(k, self.run_bytes) + self.padded_bytes +
                                      (6 * out_c if pixels % 6 else 0))
        self.dsp_scratch_bytes = self.scratch_bytes
        # in place: a 1x1 filter at stride 1 without padding; every DSP path gathers a block of pixels before it
        # writes their outputs (dsp/column.h for_pixel_blocks, backward when the output is wider)
        if (g["filter"][1:3] == (1, 1) and g["stride"] == (1, 1) and g["pad"] == (0, 0)
                and g["input"][:3] == g["output"][:3]):
            self.in_place_kernel = True
            self.grows_in_place = g["output"][3] > g["input"][3]
            self.in_place_scratch_bytes = -(-g["input"][3] // 4) * 4
        self.raster = not self.grows_in_place  # (the DSP kernels run a wider pointwise layer backward)

    def overlap_shift(self) -> int:
        """How many bytes before its input the output may start (a multiple of 8, at least 0) when the kernel
        writes output pixels in order, each pixel's outputs after its reads (ConvOp.raster): the largest excess
        of the bytes written up to and including a pixel over the lowest input byte that pixel or a later one
        reads."""
        g = self.geometry()
        n, in_h, in_w, in_c = g["input"]
        _, kh, kw, _ = g["filter"]
        _, out_h, out_w, out_c = g["output"]
        (sh, sw), (dh, dw), (ph, pw) = g["stride"], g["dilation"], g["pad"]

        def first_inside(start: np.ndarray, step: int, taps: int, size: int) -> np.ndarray:
            """The first tap position >= 0 (a pixel whose taps all lie outside reads nothing: size)."""
            skip = np.where(start < 0, (-start + step - 1) // step, 0)
            pos = start + skip * step
            return np.where((skip < taps) & (pos < size), pos, size)

        ys = first_inside(np.arange(out_h) * sh - ph, dh, kh, in_h)
        xs = first_inside(np.arange(out_w) * sw - pw, dw, kw, in_w)
        rows = np.minimum(ys[:, None] * in_w + xs[None, :], in_h * in_w)  # a pixel reading nothing: the end
        lowest = (np.arange(n)[:, None, None] * in_h * in_w + rows[None]).reshape(-1) * in_c
        later = np.minimum.accumulate(lowest[::-1])[::-1]
        written = (np.arange(len(later)) + 1) * out_c
        return align8(max(0, int((written - later).max(initial=0))))

    padded_bytes = 0  # kernels.h GemmDspParams::padded_bytes
    PADDED_COPY_LIMIT = 2048  # bytes: larger inputs gather their border pixels from the input itself

    def drop_padded_copy(self) -> None:
        """Without the padded input copy (the planner's choice where it would enlarge the arena)."""
        self.scratch_bytes -= self.padded_bytes
        self.dsp_scratch_bytes -= self.padded_bytes
        self.padded_bytes = 0
        self.generated = None

    def padded_copy_bytes(self) -> int:
        """The size of the input copy with its padding written out (dsp/column.h padded_input) where the layer
        pads and the copy is at most PADDED_COPY_LIMIT bytes, else 0."""
        g = self.geometry()
        n, _, _, c = g["input"]
        _, kh, kw, _ = g["filter"]
        _, out_h, out_w, _ = g["output"]
        if g["pad"] == (0, 0):
            return 0
        h = (out_h - 1) * g["stride"][0] + (kh - 1) * g["dilation"][0] + 1
        w = (out_w - 1) * g["stride"][1] + (kw - 1) * g["dilation"][1] + 1
        size = 4 * -(-(n * h * w * c) // 4) + 4  # + the reads past its end
        return size if size <= self.PADDED_COPY_LIMIT else 0

    def dsp_definitions(self, w: Tensor, bias: Tensor | None, mults) -> str:
        return self.gemm_dsp_definitions(unpacked_values(w).reshape(w.shape[0], -1), bias, mults, self.run_bytes)

    def call(self, ptr) -> str:
        return self.weighted_call(ptr)


class DepthwiseConvOp(ConvOp):
    kernel = "depthwise_conv_s8"
    merges_rows = False
    planar = False  # the plane kernel (takes_plane)

    def check(self):
        w = self.t(self.op.inputs[1])
        if w.dtype not in ("int8", "int4") or not w.is_constant:
            raise TinyexitError(f"{self.graph.source}: {self.op.op} filter '{w.name}' is {w.dtype}; int8 expected")
        self.choose_bits(w)
        inp = self.t(self.op.inputs[0])
        dm = getattr(self.op.options, "depthMultiplier", 1) or 1
        self.dsp = (inp.shape[3] % 4 == 0 and w.shape[3] == inp.shape[3] and dm == 1
                    and w.shape[1] * w.shape[2] <= 64)  # else: the portable kernel
        if self.dsp and self.bits < 8:  # inputs are raw int8 here: the offset is folded into the bias
            taps = unpacked_values(w).reshape(-1, w.shape[3])
            self.dsp = packed_dsp_exact(taps.T, 128, self.bits, self.folded_bias(taps))
        self.planar = self.takes_plane(w, dm)
        if self.planar:
            self.dsp = True
            self.scratch_bytes = 4 * PLANE_ROW_BYTES * (self.t(self.outputs[0]).shape[1] + 2)  # 4 channels' planes
        self.dsp_scratch_bytes = self.scratch_bytes
        # in place: depth multiplier 1, the output no larger than the input. The plane kernel with one strip per
        # row reads a group of 4 channels whole into its planes before it writes their outputs, the other
        # channels untouched; with several strips, when each output pixel lies on its input pixel (SAME), it
        # fills the next strip's planes (a second bank of scratch) before it writes a strip. The other DSP depthwise
        # kernels read the input pixel by pixel: not in place (raster below).
        out = self.t(self.outputs[0])
        one_strip, same_shape = out.shape[2] <= 6, tuple(out.shape) == tuple(inp.shape)
        if (dm == 1 and w.shape[3] == inp.shape[3] and out.nbytes <= inp.nbytes and inp.shape[0] == out.shape[0]
                and (not self.dsp or (self.planar and (one_strip or same_shape)))):
            self.in_place_kernel = True
            self.in_place_scratch_bytes = -(-inp.shape[1] * inp.shape[2] // 4) * 4
            if self.planar and not one_strip:
                self.in_place_scratch_bytes = max(self.in_place_scratch_bytes, 2 * self.scratch_bytes)
        self.raster = not self.planar  # the plane kernel goes by groups of channels

    def takes_plane(self, w: Tensor, dm: int) -> bool:
        """The plane kernel's conditions (kernels.h DepthwisePlaneParams): an int8 3x3 filter at stride 1 without
        dilation, depth multiplier 1, every channel's shift right by 1..31 with its rounding offset below 2^30
        (fast_mode 1), no activation clamp, a strip's outputs at most 4095 bytes apart."""
        o = self.op.options
        if (self.bits != 8 or dm != 1 or tuple(w.shape[1:3]) != (3, 3) or (o.strideH, o.strideW) != (1, 1)
                or (getattr(o, "dilationHFactor", 1) or 1) != 1 or (getattr(o, "dilationWFactor", 1) or 1) != 1
                or self.clamps()):
            return False
        taps = w.data.reshape(9, -1).astype(np.int64)
        fq = self.fast_requant(taps.T, _bias_data(self.op, self.graph), self.multipliers())
        if fq.mode != 1 or np.any(np.abs(self.folded_bias(taps, fq.bias)) >= (1 << 30)):  # 2 * folded bias: int32
            return False
        widest = min(6, self.t(self.outputs[0]).shape[2])  # the strips' stores: immediate offsets
        return (widest - 1) * taps.shape[1] <= 4095 and all(
            e1 + 1 <= 31 and abs(rounding_offset(self.output_zero_point(), e1)) < (1 << 30) - 1 for _, e1 in fq.rows)

    def folded_bias(self, taps: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """bias (default: the layer's) + input_offset * (sum of the channel's weights); taps: [kh * kw, channels]."""
        bias = _bias_data(self.op, self.graph) if bias is None else bias
        b = np.zeros(taps.shape[1], np.int64) if bias is None else bias.astype(np.int64)
        return b - zp_of(self.t(self.op.inputs[0])) * taps.astype(np.int64).sum(axis=0)  # input_offset = -zero point

    def dsp_definitions(self, w: Tensor, bias: Tensor | None, mults) -> str:
        _, kh, kw, c = w.shape
        taps = unpacked_values(w).reshape(kh * kw, c).astype(np.int64)
        zp_in = zp_of(self.t(self.op.inputs[0]))
        fq = self.fast_requant(taps.T, None if bias is None else bias.data, mults)
        table, fast, mode, b = fq.definition, fq.table, fq.mode, fq.bias
        self.dsp_mode = mode
        folded = self.folded_bias(taps, b)
        if np.any(np.abs(folded) >= (1 << 31)):
            raise TinyexitError(f"{self.graph.source}: {self.op.op} bias '{bias.name}' overflows when folded")
        if self.planar:
            return self.plane_definitions(taps, folded, fq.rows)
        groups = taps.reshape(kh * kw, c // 4, 4)[:, :, GROUP_ORDER].transpose(1, 0, 2)  # [group][tap][4]
        n = self.name
        if self.bits < 8:
            taps_per_word = 8 // self.bits
            padded = np.zeros((c // 4, -(-kh * kw // taps_per_word) * taps_per_word, 4), np.int64)
            padded[:, :kh * kw] = groups
            words = np.ascontiguousarray(padded).astype("<i2").reshape(-1).view("<u4")
            self.dsp_template = self.packed_template(mode, kh * kw if kh * kw in (3, 5, 9) else 0)
            if mode == 1 and kh * kw in (3, 5, 9):
                packed = pack_pair_words(words, self.bits).reshape(c // 4, -1)
                return self.depthwise_stream(folded << (16 - self.bits), packed, fq.rows, zp_in,
                                             f"DepthwisePackedDspParams {n}_dsp = {{{self.bits}, ")
            return (c_array("uint32_t", f"{n}_filter4", pack_pair_words(words, self.bits)) +
                    c_array("int32_t", f"{n}_bias32", (folded << (16 - self.bits)).astype(np.int32)) +
                    c_array("int8_t", f"{n}_padding", np.full(c, zp_in, np.int8)) + table +
                    f"static const DepthwisePackedDspParams {n}_dsp = {{{self.bits}, {fast}, {n}_filter4, {n}_bias32, "
                    f"{n}_padding, {mode}}};\n")
        # int8: per group of 4 channels and tap one word, the channels' weights in order (kernels.h)
        words = np.ascontiguousarray(taps.reshape(kh * kw, c // 4, 4).transpose(1, 0, 2).astype(np.int8)).view("<u4")
        if mode == 1 and kh * kw in (3, 5, 9):
            return self.depthwise_stream(folded, words.reshape(c // 4, -1), fq.rows, zp_in,
                                         f"DepthwiseDspParams {n}_dsp = {{")
        return (c_array("uint32_t", f"{n}_filter8", words) +
                c_array("int32_t", f"{n}_bias32", folded.astype(np.int32)) +
                c_array("int8_t", f"{n}_padding", np.full(c, zp_in, np.int8)) + table +
                f"static const DepthwiseDspParams {n}_dsp = {{{fast}, {n}_filter8, {n}_bias32, {n}_padding, {mode}}};\n")

    def plane_definitions(self, taps: np.ndarray, folded: np.ndarray, rows: list[list[int]]) -> str:
        """DepthwisePlaneParams: each channel's 9 weights, [2 * folded bias, multiplier, rounding offset], and its
        routine (depthwise_strip<strip width, shift>) by the shift's index among the layer's."""
        n, channels = self.name, taps.shape[1]
        shifts = [e1 + 1 for _, e1 in rows]
        variants = sorted(set(shifts))
        zp = self.output_zero_point()
        quant = np.array([[2 * int(folded[ch]), rows[ch][0], rounding_offset(zp, rows[ch][1])] for ch in range(channels)],
                         np.int64)
        text = (c_array("int8_t", f"{n}_taps", taps.T.astype(np.int8)) +
                c_array("int32_t", f"{n}_quant", quant.astype(np.int32)) +
                c_array("uint8_t", f"{n}_variant", np.array([variants.index(e) for e in shifts], np.uint8)))
        out_w = self.t(self.outputs[0]).shape[2]
        tables = []
        for name, width in ((f"{n}_strips", 6 if out_w >= 6 else 0), (f"{n}_tails", out_w % 6)):
            if width:
                fns = ", ".join(f"dsp::depthwise_strip<{width}, {e}, {channels}>" for e in variants)
                text += f"static const DepthwiseStripFn {name}[] = {{{fns}}};\n"
            tables.append(name if width else "nullptr")
        fill = "nullptr"
        pad_w, in_w = self.geometry()["pad"][1], self.t(self.op.inputs[0]).shape[2]
        if out_w <= 6 and channels % 4 == 0 and (pad_w + in_w - 1) * channels <= 4095:
            fill = f"dsp::depthwise_fill<{pad_w}, {pad_w + in_w}, {channels}>"  # one strip per row, written out
        self.dsp_kernel = "depthwise_plane_s8"
        return text + (f"static const DepthwisePlaneParams {n}_dsp = {{{n}_taps, {n}_quant, {n}_variant, "
                       f"{tables[0]}, {tables[1]}, {fill}}};\n")

    def depthwise_stream(self, bias: np.ndarray, filter_words: np.ndarray, rows: list[list[int]], zp_in: int,
                         params: str) -> str:
        """The stream of dsp/depthwise_stream.h (biases as the kernel starts from them, the filter words of each
        group of 4 channels, the [multiplier, ~shift] rows) and the params struct `params` opens."""
        n, groups = self.name, len(filter_words)
        self.stream_split = (4 * filter_words.size, 16 * groups, 32 * groups)
        stream = np.concatenate([bias.reshape(groups, 4), filter_words.astype(np.int64),
                                 np.array(rows, np.int64).reshape(groups, 8)], axis=1)
        return (c_array("uint32_t", f"{n}_stream", (stream & 0xFFFFFFFF).astype(np.uint32)) +
                c_array("int8_t", f"{n}_padding", np.full(4 * groups, zp_in, np.int8)) +
                f"static const {params}nullptr, nullptr, nullptr, {n}_padding, 1, {n}_stream}};\n")


PLANE_ROW_BYTES = 16  # dsp/depthwise_plane.h: 8 int16 per plane row


class FullyConnectedOp(WeightedOp):
    kernel = "fully_connected_s8"

    def check(self):
        w = self.t(self.op.inputs[1])
        if w.dtype not in ("int8", "int4") or not w.is_constant:
            raise TinyexitError(f"{self.graph.source}: FULLY_CONNECTED weights '{w.name}' are {w.dtype}; int8 expected")
        if w.zero_point is not None and np.any(w.zero_point != 0):
            raise TinyexitError(f"{self.graph.source}: FULLY_CONNECTED weights '{w.name}' have a non-zero zero point")
        self.choose_bits(w)
        self.dsp = self.bits == 8 or packed_dsp_exact(unpacked_values(w), 255, self.bits, _bias_data(self.op, self.graph))
        self.scratch_bytes = gemm_scratch_bytes(w.shape[1], w.shape[1]) if self.dsp else 0
        self.dsp_scratch_bytes = self.scratch_bytes

    def definitions(self) -> str:
        if self.generated is None:
            self.generated = self.generate_definitions()
        return self.generated

    def generate_definitions(self) -> str:
        inp, w, out = self.t(self.op.inputs[0]), self.t(self.op.inputs[1]), self.t(self.op.outputs[0])
        bias = self.t(self.op.inputs[2]) if len(self.op.inputs) > 2 and self.op.inputs[2] >= 0 else None
        units, depth = w.shape
        batches = int(np.prod(inp.shape)) // depth
        scales = np.broadcast_to(w.scale, (units,))
        mults = [quantize_multiplier(scale_of(inp) * f32(s) / scale_of(out)) for s in scales]
        lo, hi = activation_range(self.op.options.fusedActivationFunction, scale_of(out), zp_of(out))
        dsp = ("#if TX_DSP_KERNELS\n" + self.gemm_dsp_definitions(unpacked_values(w), bias, mults, depth) + "#endif\n"
               if self.dsp else "")
        text = self.weight_arrays(w, bias, mults)
        text += self.params("FullyConnectedParams", f"{batches}, {depth}, {units}, {-zp_of(inp)}, {zp_of(out)}, {lo}, {hi}")
        return text + dsp

    def call(self, ptr) -> str:
        return self.weighted_call(ptr)



OPS = {"CONV_2D": ConvOp, "DEPTHWISE_CONV_2D": DepthwiseConvOp, "FULLY_CONNECTED": FullyConnectedOp}
