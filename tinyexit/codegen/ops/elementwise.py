"""Elementwise operators and activations, with TFLite Micro's Prepare arithmetic done here.

Binary (kernels/<op>_s8.cc): ADD, SUB, MUL, MAXIMUM, MINIMUM, PRELU; broadcasting, either operand may be a
constant (a standalone BatchNormalization becomes MUL and ADD with constant per-channel tensors).
Unary int8 -> int8 (LOGISTIC, TANH, HARD_SWISH, RELU, RELU6, LEAKY_RELU, QUANTIZE): the output depends on
one input value, so TFLite Micro's integer arithmetic runs here for all 256 of them and the firmware looks
the answer up (kernels/lookup_s8.cc; 256 bytes of flash per operator). SOFTMAX.
"""

from __future__ import annotations

import math

import numpy as np

from tinyexit.codegen import fixed_point as fp
from tinyexit.codegen.ops.base import Op, c_array, scale_of, zp_of
from tinyexit.codegen.quantization import (ACTIVATIONS, activation_range, f32, multiply_by_quantized_multiplier,
                                           quantize_multiplier, round_half_away)
from tinyexit.errors import TinyexitError
from tinyexit.tflite_graph import Tensor

INT8_VALUES = np.arange(-128, 128)


def broadcast_loops(a: tuple, b: tuple, out: tuple) -> tuple[list[int], list[int], list[int]]:
    """The output as 4 nested loops (sizes, outermost first) and each input's stride per loop (0: broadcast),
    kernels_elementwise.h Broadcast. Dimensions of size 1 are dropped and neighbours that broadcast alike
    merged, so any rank fits unless the broadcast pattern alternates more than 4 times."""
    rank = len(out)
    a = (1,) * (rank - len(a)) + tuple(a)
    b = (1,) * (rank - len(b)) + tuple(b)
    loops: list[list] = []  # [size, a broadcast, b broadcast]
    for n, da, db in zip(out, a, b):
        if da not in (1, n) or db not in (1, n):
            raise ValueError(f"shapes {a} and {b} do not broadcast to {out}")
        if n == 1:
            continue
        kind = [da == 1, db == 1]
        if loops and loops[-1][1:] == kind:
            loops[-1][0] *= n
        else:
            loops.append([n, *kind])
    if len(loops) > 4:
        raise ValueError(f"shapes {a} and {b} broadcast in more than 4 runs of dimensions")
    sizes, a_strides, b_strides = [], [], []
    a_step = b_step = 1
    for n, a_broadcast, b_broadcast in reversed(loops):
        sizes.insert(0, n)
        a_strides.insert(0, 0 if a_broadcast else a_step)
        b_strides.insert(0, 0 if b_broadcast else b_step)
        a_step *= 1 if a_broadcast else n
        b_step *= 1 if b_broadcast else n
    pad = 4 - len(sizes)
    return [1] * pad + sizes, [0] * pad + a_strides, [0] * pad + b_strides


class BinaryOp(Op):
    """Two int8 operands, each a tensor or a constant, broadcast against each other to the output."""

    kernel = ""
    in_place_ok = True  # broadcast.h: output[i] is written right after reading a full-shaped operand's [i]
    params_type = ""

    def check(self):
        out = self.t(self.outputs[0])
        for i in self.op.inputs[:2]:
            t = self.t(i)
            if t.dtype != "int8":
                raise TinyexitError(f"{self.graph.source}: {self.op.op} '{out.name}' input '{t.name}' is {t.dtype}; "
                                    f"only int8 is supported here")
        try:
            self.loops = broadcast_loops(*(self.t(i).shape for i in self.op.inputs[:2]), out.shape)
        except ValueError as err:
            raise TinyexitError(f"{self.graph.source}: {self.op.op} '{out.name}': {err}") from None
        activation = getattr(self.op.options, "fusedActivationFunction", 0)
        if activation not in ACTIVATIONS:
            raise TinyexitError(f"{self.graph.source}: {self.op.op} '{out.name}' has a fused activation "
                                f"({activation}) other than RELU, RELU6 and RELU_N1_TO_1")

    def broadcast(self) -> str:
        return "{" + ", ".join("{" + ", ".join(str(v) for v in row) + "}" for row in self.loops) + "}"

    def operand(self, i: int, ptr) -> str:
        return f"{self.name}_in{i}" if self.t(i).is_constant else ptr(i)

    def constants(self) -> str:
        return "".join(c_array("int8_t", f"{self.name}_in{i}", self.t(i).data)
                       for i in dict.fromkeys(self.op.inputs[:2]) if self.t(i).is_constant)

    def params(self) -> str:
        """The C++ initializer of the parameter struct after its Broadcast."""
        raise NotImplementedError

    def definitions(self) -> str:
        rest = self.params()
        return self.constants() + (f"static const {self.params_type} {self.name}_params = "
                                   f"{{{self.broadcast()}{', ' + rest if rest else ''}}};\n")

    def dsp(self) -> bool:
        """Whether its DSP kernel (kernels/dsp/<op>_s8.cc) is exact for these parameters."""
        return False

    def call(self, ptr) -> str:
        a, b = self.op.inputs[:2]
        args = f"({self.name}_params, {self.operand(a, ptr)}, {self.operand(b, ptr)}, {ptr(self.outputs[0])});"
        if not self.dsp():
            return self.kernel + args
        return f"\n#if TX_DSP_KERNELS\n  dsp::{self.kernel}{args}\n#else\n  {self.kernel}{args}\n#endif"

    def scales(self) -> tuple[float, float, float]:
        return tuple(scale_of(self.t(i)) for i in (*self.op.inputs[:2], self.outputs[0]))

    def activation(self) -> tuple[int, int]:
        out = self.t(self.outputs[0])
        return activation_range(self.op.options.fusedActivationFunction, scale_of(out), zp_of(out))


class AddOp(BinaryOp):
    kernel, params_type = "add_s8", "AddParams"
    LEFT_SHIFT = 20

    def real_multipliers(self) -> tuple[float, float, float]:
        s1, s2, so = self.scales()
        twice_max = 2 * max(s1, s2)
        return s1 / twice_max, s2 / twice_max, twice_max / ((1 << self.LEFT_SHIFT) * so)

    def dsp(self) -> bool:
        """dsp/elementwise.h: one input rescaled by the multiplier 2^30 and shift 0 (the one with the larger
        scale always is), the other that or shifting right, and the output shifting right."""
        (m1, s1), (m2, s2), (_, so) = (quantize_multiplier(r) for r in self.real_multipliers())
        shift_only = [(m, s) == (1 << 30, 0) for m, s in ((m1, s1), (m2, s2))]
        return any(shift_only) and (shift_only[0] or s1 < 0) and (shift_only[1] or s2 < 0) and so < 0

    def check(self):
        super().check()
        if max(quantize_multiplier(r)[1] for r in self.real_multipliers()) > 0:
            # TFLite Micro's QuantizeMultiplierSmallerThanOneExp refuses them too
            raise TinyexitError(f"{self.graph.source}: {self.op.op} '{self.t(self.outputs[0]).name}' needs a "
                                f"rescale above 1; not supported")

    def params(self) -> str:
        (m1, s1), (m2, s2), (mo, so) = (quantize_multiplier(r) for r in self.real_multipliers())
        a, b = (self.t(i) for i in self.op.inputs[:2])
        lo, hi = self.activation()
        return (f"{self.LEFT_SHIFT}, {-zp_of(a)}, {m1}, {s1}, {-zp_of(b)}, {m2}, {s2}, "
                f"{zp_of(self.t(self.outputs[0]))}, {mo}, {so}, {lo}, {hi}")


class SubOp(AddOp):
    kernel = "sub_s8"

    def real_multipliers(self) -> tuple[float, float, float]:
        # TFLite Micro's SUB computes these in float32, ADD in double
        s1, s2, so = (np.float32(s) for s in self.scales())
        twice_max = np.float32(2) * max(s1, s2)
        return (float(s1 / twice_max), float(s2 / twice_max),
                float(twice_max / (np.float32(1 << self.LEFT_SHIFT) * so)))


class MulOp(BinaryOp):
    kernel, params_type = "mul_s8", "MulParams"

    def multiplier(self) -> tuple[int, int]:
        s1, s2, so = self.scales()
        return quantize_multiplier(s1 * s2 / so)

    def dsp(self) -> bool:
        return self.multiplier()[1] <= 14  # |product| <= 255^2: |product| * 2^(shift + 1) < 2^31

    def params(self) -> str:
        m, s = self.multiplier()
        a, b = (self.t(i) for i in self.op.inputs[:2])
        lo, hi = self.activation()
        return f"{-zp_of(a)}, {-zp_of(b)}, {zp_of(self.t(self.outputs[0]))}, {m}, {s}, {lo}, {hi}"


class MaximumOp(BinaryOp):
    kernel = "maximum_s8"

    def definitions(self) -> str:
        return self.constants() + f"static const Broadcast {self.name}_params = {self.broadcast()};\n"


class MinimumOp(MaximumOp):
    kernel = "minimum_s8"


class PreluOp(BinaryOp):
    kernel, params_type = "prelu_s8", "PreluParams"

    def params(self) -> str:
        s_in, s_alpha, s_out = self.scales()
        mi, si = quantize_multiplier(s_in / s_out)
        ma, sa = quantize_multiplier(s_in * s_alpha / s_out)
        inp, alpha = (self.t(i) for i in self.op.inputs[:2])
        return f"{-zp_of(inp)}, {-zp_of(alpha)}, {zp_of(self.t(self.outputs[0]))}, {mi}, {si}, {ma}, {sa}"


class LookupOp(Op):
    """An int8 -> int8 activation as the table of its 256 answers (kernels/lookup_s8.cc)."""

    in_place_ok = True  # lookup_s8 reads input[i..i+3] before it writes output[i..i+3]

    def answers(self, inp: Tensor, out: Tensor) -> list[int]:
        """TFLite Micro's output for each input value -128..127."""
        raise NotImplementedError

    def definitions(self) -> str:
        answers = np.asarray(self.answers(self.t(self.op.inputs[0]), self.t(self.outputs[0])), np.int64)
        assert answers.shape == (256,) and answers.min() >= -128 and answers.max() <= 127
        by_bit_pattern = np.roll(answers, -128)  # table[0..127] for inputs 0..127, table[128..255] for -128..-1
        return c_array("int8_t", f"{self.name}_table", by_bit_pattern)

    def call(self, ptr) -> str:
        size = int(np.prod(self.t(self.outputs[0]).shape))
        return f"lookup_s8({self.name}_table, {size}, {ptr(self.op.inputs[0])}, {ptr(self.outputs[0])});"


def requantized(inp: Tensor, multiplier: int, shift: int, output_offset: int, lo: int = -128,
                hi: int = 127) -> list[int]:
    """Each input value less its zero point, times a quantized multiplier, plus the output zero point,
    clamped (TFLite's Requantize and ReluQuantized)."""
    return [min(max(multiply_by_quantized_multiplier(int(v) - zp_of(inp), multiplier, shift) + output_offset,
                    lo), hi) for v in INT8_VALUES]


class QuantizeOp(LookupOp):
    """QUANTIZE int8 -> int8 (requantization; float inputs are DEQUANTIZE's business)."""

    def answers(self, inp, out):
        return requantized(inp, *quantize_multiplier(scale_of(inp) / scale_of(out)), zp_of(out))


class ReluOp(LookupOp):
    def answers(self, inp, out):
        return requantized(inp, *quantize_multiplier(scale_of(inp) / scale_of(out)), zp_of(out),
                           lo=max(-128, zp_of(out)))


class Relu6Op(LookupOp):
    """TFLite Micro clamps the raw input to its 0 and 6 and ignores the output's quantization."""

    def answers(self, inp, out):
        six = round_half_away(float(np.float32(6.0) / np.float32(scale_of(inp)))) + zp_of(inp)
        six = min(max(six, -128), 127)
        return [min(max(int(v), zp_of(inp)), six) for v in INT8_VALUES]


class LeakyReluOp(LookupOp):
    def answers(self, inp, out):
        s_in, s_out, alpha = np.float32(scale_of(inp)), np.float32(scale_of(out)), np.float32(self.op.options.alpha)
        m_identity, s_identity = quantize_multiplier(float(s_in / s_out))  # float32 arithmetic, as TFLite Micro
        m_alpha, s_alpha = quantize_multiplier(float(s_in * alpha / s_out))
        answers = []
        for v in INT8_VALUES:
            x = int(v) - zp_of(inp)
            if x >= 0:
                y = multiply_by_quantized_multiplier(x, m_identity, s_identity)
            else:  # a negative alpha: its magnitude's multiplier, negated after
                y = multiply_by_quantized_multiplier(x, abs(m_alpha), s_alpha) * (-1 if m_alpha < 0 else 1)
            answers.append(min(max(y + zp_of(out), -128), 127))
        return answers


class FixedPointActivationOp(LookupOp):
    """LOGISTIC and TANH: the input rescaled to Q4.27 (values beyond the radius saturate), gemmlowp's
    fixed-point function to Q0.31, rounded to the output's fixed quantization."""

    INPUT_INTEGER_BITS = 4

    def function(self, q4: int) -> int:
        raise NotImplementedError

    def answers(self, inp, out):
        real = scale_of(inp) * (1 << (31 - self.INPUT_INTEGER_BITS))
        q, left_shift = math.frexp(real)
        multiplier = fp.wrap32(round_half_away(q * (1 << 31)))
        radius = math.floor(((1 << self.INPUT_INTEGER_BITS) - 1) * (1 << (31 - self.INPUT_INTEGER_BITS))
                            / 2.0 ** left_shift)
        answers = []
        for v in INT8_VALUES:
            x = int(v) - zp_of(inp)
            if x <= -radius:
                answers.append(-128)
            elif x >= radius:
                answers.append(127)
            else:
                q4 = multiply_by_quantized_multiplier(x, multiplier, left_shift)
                answers.append(min(max(self.function(q4), -128), 127))
        return answers


class LogisticOp(FixedPointActivationOp):
    def check(self):
        out = self.t(self.outputs[0])
        if zp_of(out) != -128:  # TFLite Micro's Prepare requires it; the scale it takes as 1/256
            raise TinyexitError(f"{self.graph.source}: LOGISTIC output '{out.name}' must have zero point -128")

    def function(self, q4):
        return fp.rounding_divide_by_pot(fp.logistic(q4, self.INPUT_INTEGER_BITS), 23) - 128


class TanhOp(FixedPointActivationOp):
    """The output's quantization is taken as scale 1/128, zero point 0 (TFLite Micro does not check it)."""

    def function(self, q4):
        return fp.rounding_divide_by_pot(fp.tanh(q4, self.INPUT_INTEGER_BITS), 24)


def _int16_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier then DownScaleInt32ToInt16Multiplier: (Q15 multiplier, exponent)."""
    m32, exponent = quantize_multiplier(real)
    if m32 >= fp.INT32_MAX - (1 << 15):
        return fp.INT16_MAX, exponent
    return (m32 + (1 << 15)) >> 16, exponent


class HardSwishOp(LookupOp):
    """x * relu6(x + 3) / 6 in TFLite's int16 fixed point."""

    def check(self):
        inp, out = self.t(self.op.inputs[0]), self.t(self.outputs[0])
        if self.multipliers(inp, out)[0][1] > 0:
            raise TinyexitError(f"{self.graph.source}: HARD_SWISH '{out.name}' needs an output rescale above 1 "
                                f"(TFLite Micro refuses it)")

    @staticmethod
    def multipliers(inp: Tensor, out: Tensor):
        hires_input_scale = np.float32(1.0 / 128.0) * np.float32(scale_of(inp))
        reluish_scale = np.float32(3.0) / np.float32(32768.0)
        return (_int16_multiplier(float(hires_input_scale / np.float32(scale_of(out)))),
                _int16_multiplier(float(hires_input_scale / reluish_scale)))

    def answers(self, inp, out):
        (out_mult, out_exp), (reluish_mult, reluish_exp) = self.multipliers(inp, out)

        def saturating_left_shift(x: int, amount: int) -> int:
            return min(max(x * (1 << amount), fp.INT16_MIN), fp.INT16_MAX)

        answers = []
        for v in INT8_VALUES:
            hires = fp.wrap16((int(v) - zp_of(inp)) * 128)
            preshift_output = fp.srdhm16(hires, out_mult)
            reluish = hires
            if reluish_exp > 0:
                reluish = saturating_left_shift(reluish, reluish_exp - 1)
            reluish = fp.srdhm16(reluish, reluish_mult)
            if reluish_exp > 0:
                reluish = saturating_left_shift(reluish, 1)
            if reluish_exp < 0:
                reluish = fp.rounding_divide_by_pot(reluish, -reluish_exp)
            reluish = (reluish + (1 << 15)) >> 1  # [-1, 1] -> [0, 1]
            y = fp.rounding_divide_by_pot(fp.sdhm16(reluish, preshift_output), -out_exp)
            answers.append(min(max(fp.wrap16(y + zp_of(out)), -128), 127))
        return answers


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


OPS = {"ADD": AddOp, "SUB": SubOp, "MUL": MulOp, "MAXIMUM": MaximumOp, "MINIMUM": MinimumOp, "PRELU": PreluOp,
       "LOGISTIC": LogisticOp, "TANH": TanhOp, "HARD_SWISH": HardSwishOp, "RELU": ReluOp, "RELU6": Relu6Op,
       "LEAKY_RELU": LeakyReluOp, "QUANTIZE": QuantizeOp, "SOFTMAX": SoftmaxOp}
