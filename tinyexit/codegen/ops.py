"""One small class per operator: it checks what it supports, reports its cost, and emits its own C++
(parameter structs computed here, at generation time, and the kernel call)."""

from __future__ import annotations

import numpy as np

from tinyexit.codegen.quantization import activation_range, f32, quantize_multiplier, same_padding
from tinyexit.errors import TinyexitError
from tinyexit.tflite_graph import Graph, Operator, Tensor


def c_array(ctype: str, name: str, values: np.ndarray) -> str:
    flat = np.asarray(values).reshape(-1)
    body = ",".join(str(int(v)) for v in flat) if flat.size else "0"
    return f"alignas(8) static const {ctype} {name}[{max(flat.size, 1)}] = {{{body}}};\n"


def shape4(t: Tensor) -> str:
    s = list(t.shape)
    s = [1] * (4 - len(s)) + s
    return "{" + ", ".join(str(d) for d in s) + "}"


class Op:
    """Base: `activations` are the non-constant tensors the op reads; `outputs` what it writes."""

    kernel = ""

    def __init__(self, graph: Graph, op: Operator, name: str):
        self.graph, self.op, self.name = graph, op, name
        self.activations = [i for i in op.inputs if i >= 0 and not graph.tensors[i].is_constant]
        self.outputs = list(op.outputs)
        for t in self.activations + self.outputs:
            tensor = graph.tensors[t]
            if tensor.dtype != "int8":
                raise TinyexitError(f"{graph.source}: {op.op} tensor '{tensor.name}' is {tensor.dtype}; "
                                    f"only int8 activations are supported")
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

    def definitions(self) -> str:
        return ""

    def call(self, ptr) -> str:
        raise NotImplementedError

    def weight_arrays(self, w: Tensor, bias: Tensor | None, mults: list[tuple[int, int]]) -> str:
        """Filter, optional bias and per-channel requantization as const arrays `<name>_filter` etc."""
        n = self.name
        self.has_bias = bias is not None
        text = c_array("int8_t", f"{n}_filter", w.data)
        text += c_array("int32_t", f"{n}_bias", bias.data) if bias is not None else ""
        text += c_array("int32_t", f"{n}_mult", np.array([m for m, _ in mults]))
        return text + c_array("int32_t", f"{n}_shift", np.array([s for _, s in mults]))

    def weighted_call(self, ptr) -> str:
        n = self.name
        bias = f"{n}_bias" if self.has_bias else "nullptr"
        return f"{self.kernel}({n}_params, {ptr(self.op.inputs[0])}, {n}_filter, {bias}, {ptr(self.outputs[0])});"


def _scale(t: Tensor) -> float:
    return f32(t.scale[0])


def _zp(t: Tensor) -> int:
    return int(t.zero_point[0])


class ConvOp(Op):
    kernel = "conv_s8"
    depthwise = False

    def check(self):
        w = self.t(self.op.inputs[1])
        if w.dtype != "int8" or not w.is_constant:
            raise TinyexitError(f"{self.graph.source}: {self.op.op} filter '{w.name}' is {w.dtype}; int8 expected")

    def definitions(self) -> str:
        o = self.op.options
        inp, w, out = self.t(self.op.inputs[0]), self.t(self.op.inputs[1]), self.t(self.op.outputs[0])
        bias = self.t(self.op.inputs[2]) if len(self.op.inputs) > 2 and self.op.inputs[2] >= 0 else None
        _, in_h, in_w, _ = inp.shape
        _, out_h, out_w, out_c = out.shape
        kh, kw = w.shape[1], w.shape[2]
        dh, dw = getattr(o, "dilationHFactor", 1) or 1, getattr(o, "dilationWFactor", 1) or 1
        same = o.padding == 0
        pad_h = same_padding(o.strideH, dh, in_h, kh, out_h) if same else 0
        pad_w = same_padding(o.strideW, dw, in_w, kw, out_w) if same else 0
        scales = np.broadcast_to(w.scale, (out_c,))
        mults = [quantize_multiplier(_scale(inp) * f32(s) / _scale(out)) for s in scales]
        lo, hi = activation_range(o.fusedActivationFunction, _scale(out), _zp(out))
        dm = getattr(o, "depthMultiplier", 1) or 1
        n = self.name
        text = self.weight_arrays(w, bias, mults)
        text += (f"static const ConvParams {n}_params = {{{shape4(inp)}, {shape4(w)}, {shape4(out)}, "
                 f"{o.strideH}, {o.strideW}, {dh}, {dw}, {pad_h}, {pad_w}, {dm}, {-_zp(inp)}, {_zp(out)}, "
                 f"{lo}, {hi}, {n}_mult, {n}_shift}};\n")
        return text

    def call(self, ptr) -> str:
        return self.weighted_call(ptr)


class DepthwiseConvOp(ConvOp):
    kernel = "depthwise_conv_s8"


class FullyConnectedOp(Op):
    kernel = "fully_connected_s8"

    def check(self):
        w = self.t(self.op.inputs[1])
        if w.dtype != "int8" or not w.is_constant:
            raise TinyexitError(f"{self.graph.source}: FULLY_CONNECTED weights '{w.name}' are {w.dtype}; int8 expected")
        if w.zero_point is not None and np.any(w.zero_point != 0):
            raise TinyexitError(f"{self.graph.source}: FULLY_CONNECTED weights '{w.name}' have a non-zero zero point")

    def definitions(self) -> str:
        inp, w, out = self.t(self.op.inputs[0]), self.t(self.op.inputs[1]), self.t(self.op.outputs[0])
        bias = self.t(self.op.inputs[2]) if len(self.op.inputs) > 2 and self.op.inputs[2] >= 0 else None
        units, depth = w.shape
        batches = int(np.prod(inp.shape)) // depth
        scales = np.broadcast_to(w.scale, (units,))
        mults = [quantize_multiplier(_scale(inp) * f32(s) / _scale(out)) for s in scales]
        lo, hi = activation_range(self.op.options.fusedActivationFunction, _scale(out), _zp(out))
        n = self.name
        text = self.weight_arrays(w, bias, mults)
        text += (f"static const FullyConnectedParams {n}_params = {{{batches}, {depth}, {units}, {-_zp(inp)}, "
                 f"{_zp(out)}, {lo}, {hi}, {n}_mult, {n}_shift}};\n")
        return text

    def call(self, ptr) -> str:
        return self.weighted_call(ptr)


class PoolOp(Op):
    kernel = "avg_pool_s8"

    def check(self):
        inp, out = self.t(self.op.inputs[0]), self.t(self.op.outputs[0])
        if (_scale(inp), _zp(inp)) != (_scale(out), _zp(out)):
            raise TinyexitError(f"{self.graph.source}: {self.op.op} '{out.name}' requantizes; not supported")

    def definitions(self) -> str:
        o = self.op.options
        inp, out = self.t(self.op.inputs[0]), self.t(self.op.outputs[0])
        _, in_h, in_w, _ = inp.shape
        _, out_h, out_w, _ = out.shape
        same = o.padding == 0
        pad_h = same_padding(o.strideH, 1, in_h, o.filterHeight, out_h) if same else 0
        pad_w = same_padding(o.strideW, 1, in_w, o.filterWidth, out_w) if same else 0
        lo, hi = activation_range(o.fusedActivationFunction, _scale(out), _zp(out))
        return (f"static const PoolParams {self.name}_params = {{{shape4(inp)}, {shape4(out)}, {o.filterHeight}, "
                f"{o.filterWidth}, {o.strideH}, {o.strideW}, {pad_h}, {pad_w}, {lo}, {hi}}};\n")

    def call(self, ptr) -> str:
        return f"{self.kernel}({self.name}_params, {ptr(self.op.inputs[0])}, {ptr(self.outputs[0])});"


class MaxPoolOp(PoolOp):
    kernel = "max_pool_s8"


class AddOp(Op):
    LEFT_SHIFT = 20

    def check(self):
        a, b = (self.t(i) for i in self.op.inputs)
        if a.shape != b.shape or len(self.activations) != 2:
            raise TinyexitError(f"{self.graph.source}: ADD '{self.t(self.outputs[0]).name}' broadcasts or adds a "
                                f"constant; only same-shape tensors are supported")

    def definitions(self) -> str:
        a, b, out = self.t(self.op.inputs[0]), self.t(self.op.inputs[1]), self.t(self.outputs[0])
        twice_max = 2 * max(_scale(a), _scale(b))
        m1, s1 = quantize_multiplier(_scale(a) / twice_max)
        m2, s2 = quantize_multiplier(_scale(b) / twice_max)
        mo, so = quantize_multiplier(twice_max / ((1 << self.LEFT_SHIFT) * _scale(out)))
        if max(s1, s2, so) > 0:
            raise TinyexitError(f"{self.graph.source}: ADD '{out.name}' needs a rescale above 1; not supported")
        lo, hi = activation_range(self.op.options.fusedActivationFunction, _scale(out), _zp(out))
        return (f"static const AddParams {self.name}_params = {{{int(np.prod(out.shape))}, {self.LEFT_SHIFT}, "
                f"{-_zp(a)}, {m1}, {s1}, {-_zp(b)}, {m2}, {s2}, {_zp(out)}, {mo}, {so}, {lo}, {hi}}};\n")

    def call(self, ptr) -> str:
        a, b = self.op.inputs
        return f"add_s8({self.name}_params, {ptr(a)}, {ptr(b)}, {ptr(self.outputs[0])});"


class SoftmaxOp(Op):
    SCALED_DIFF_INTEGER_BITS = 5

    def check(self):
        out = self.t(self.outputs[0])
        if abs(_scale(out) - 1 / 256) > 1e-9 or _zp(out) != -128:
            raise TinyexitError(f"{self.graph.source}: SOFTMAX output '{out.name}' must be quantized with scale "
                                f"1/256 and zero point -128")

    def definitions(self) -> str:
        inp = self.t(self.op.inputs[0])
        bits = self.SCALED_DIFF_INTEGER_BITS
        beta = f32(self.op.options.beta)
        real = min(beta * _scale(inp) * (1 << (31 - bits)), (1 << 31) - 1.0)
        multiplier, left_shift = quantize_multiplier(real)
        if real <= 1.0 or left_shift < 0:
            raise TinyexitError(f"{self.graph.source}: SOFTMAX input scale {_scale(inp)} is too small")
        radius = ((1 << bits) - 1) * (1 << (31 - bits)) / (1 << left_shift)
        depth = inp.shape[-1]
        return (f"static const SoftmaxParams {self.name}_params = {{{int(np.prod(inp.shape)) // depth}, {depth}, "
                f"{multiplier}, {left_shift}, {-int(np.floor(radius))}}};\n")

    def call(self, ptr) -> str:
        return f"softmax_s8({self.name}_params, {ptr(self.op.inputs[0])}, {ptr(self.outputs[0])});"


class ReshapeOp(Op):
    def call(self, ptr) -> str:
        size = int(np.prod(self.t(self.outputs[0]).shape))
        return f"copy_s8({ptr(self.op.inputs[0])}, {size}, {ptr(self.outputs[0])});"


class ConcatenationOp(Op):
    def check(self):
        out = self.t(self.op.outputs[0])
        for i in self.activations:
            if (_scale(self.t(i)), _zp(self.t(i))) != (_scale(out), _zp(out)):
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


OPS = {"CONV_2D": ConvOp, "DEPTHWISE_CONV_2D": DepthwiseConvOp, "FULLY_CONNECTED": FullyConnectedOp,
       "AVERAGE_POOL_2D": PoolOp, "MAX_POOL_2D": MaxPoolOp, "RESHAPE": ReshapeOp,
       "CONCATENATION": ConcatenationOp, "ADD": AddOp,
       "SOFTMAX": SoftmaxOp}


def make(graph: Graph, op: Operator, name: str) -> Op:
    cls = OPS.get(op.op)
    if cls is None:
        raise TinyexitError(f"{graph.source}: operator {op.op} (output '{graph.tensors[op.outputs[0]].name}') "
                            f"is not supported by the firmware (supported: {', '.join(sorted(OPS))})")
    return cls(graph, op, name)
