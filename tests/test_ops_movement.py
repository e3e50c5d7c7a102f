"""The byte-moving operators (codegen/ops/movement.py, kernels/copy_strided_s8.cc & co) and constant folding
(codegen/fold.py) against TFLite Micro.

Per operator: hand-built models (random shapes, masks, negative strides, axes, paddings, quantizations) whose
input is one int8 vector, sliced and reshaped into each case's input, the operator applied, its outputs
flattened and concatenated into one output. Then Keras layers that lower to these operators, each converted
with `convert_int8` as a small model; then one model chaining several of them on qemu-m4. Host builds use the
portable kernels (these operators have no DSP variant)."""

import numpy as np
import pytest

from tinyexit.codegen import fold
from tinyexit.export import convert_int8
from tinyexit.firmware_build import build
from tinyexit.harness import firmware
from tinyexit.reference import StageInterpreter
from tinyexit.tflite_graph import Graph, serialize
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

TYPES = {"int8": schema.TensorType.INT8, "int32": schema.TensorType.INT32}


class Net:
    """A TFLite model built tensor by tensor (the schema's object API), for shapes and options the converter
    would not produce on its own."""

    def __init__(self):
        self.tensors, self.ops, self.codes = [], [], []
        self.buffers = [schema.BufferT()]

    def tensor(self, shape, dtype="int8", data=None, scale=0.05, zero_point=0) -> int:
        t = schema.TensorT()
        t.shape, t.type, t.name = list(shape), TYPES[dtype], f"t{len(self.tensors)}"
        if dtype == "int8":
            t.quantization = schema.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [float(scale)], [int(zero_point)]
        if data is not None:
            b = schema.BufferT()
            b.data = list(np.asarray(data, {"int8": np.int8, "int32": np.int32}[dtype]).tobytes())
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const(self, values, dtype="int32", **quantization) -> int:
        values = np.asarray(values)
        return self.tensor(values.shape, dtype, values, **quantization)

    def op(self, name: str, inputs, outputs, options=None) -> None:
        code = getattr(schema.BuiltinOperator, name)
        if code not in self.codes:
            self.codes.append(code)
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.codes.index(code), list(inputs), list(outputs)
        if options is not None:
            o.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__[:-1])
            o.builtinOptions = options
        self.ops.append(o)

    def finish(self, inputs, outputs) -> bytes:
        sub = schema.SubGraphT()
        sub.tensors, sub.operators, sub.inputs, sub.outputs = self.tensors, self.ops, list(inputs), list(outputs)
        model = schema.ModelT()
        model.version, model.subgraphs, model.buffers = 3, [sub], self.buffers
        model.operatorCodes = []
        for code in self.codes:
            c = schema.OperatorCodeT()
            c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
            model.operatorCodes.append(c)
        return serialize(model)


def options(cls, **fields):
    o = cls()
    for k, v in fields.items():
        setattr(o, k, v)
    return o


class Cases:
    """One model: an int8 input vector; `view(shape)` is a fresh stretch of it as a tensor of that shape (SLICE
    and RESHAPE); `result(t)` flattens an output into the model's one output (RESHAPE, CONCATENATION)."""

    SIZE = 2048

    def __init__(self, rng):
        self.rng, self.net = rng, Net()
        self.zero_point = int(rng.integers(-20, 20))
        self.input = self.net.tensor([self.SIZE], zero_point=self.zero_point)
        self.results = []

    def tensor(self, shape, **quantization):
        return self.net.tensor(shape, **{"zero_point": self.zero_point, **quantization})

    def view(self, shape, **quantization) -> int:
        n = int(np.prod(shape))
        start = int(self.rng.integers(0, self.SIZE - n + 1))
        flat = self.tensor([n])
        self.net.op("SLICE", [self.input, self.net.const([start]), self.net.const([n])], [flat])
        return self.reshape(flat, shape, **quantization)

    def reshape(self, t, shape, **quantization) -> int:
        out = self.tensor(shape, **quantization)
        self.net.op("RESHAPE", [t, self.net.const(list(shape))], [out])
        return out

    def result(self, t) -> None:
        """(Reshaped into the common quantization: RESHAPE copies values as they are, CONCATENATION checks.)"""
        self.results.append(self.reshape(t, [int(np.prod(self.net.tensors[t].shape))]))

    def finish(self) -> bytes:
        results = self.results
        while len(results) > 1:  # TFLite Micro concatenates at most 10 inputs at once
            joined = []
            for k in range(0, len(results), 10):
                group = results[k:k + 10]
                out = self.tensor([sum(self.net.tensors[t].shape[0] for t in group)])
                self.net.op("CONCATENATION", group, [out], options(schema.ConcatenationOptionsT, axis=0))
                joined.append(out)
            results = joined
        return self.net.finish([self.input], results)


def random_shape(rng, rank, low=1, high=6):
    return [int(v) for v in rng.integers(low, high + 1, rank)]


def case_strided_slice(c: Cases, rng):
    rank = int(rng.integers(1, 5))  # TFLite Micro: up to 4 dimensions
    shape = random_shape(rng, rank)
    begin, end, strides = [], [], []
    begin_mask = end_mask = shrink = 0
    for k, n in enumerate(shape):
        if rng.random() < 0.2:  # shrink: a valid index, forward
            shrink |= 1 << k
            begin.append(int(rng.integers(-n, n)))
            end.append(int(rng.integers(-n - 2, n + 2)))
            strides.append(1)
            continue
        stride = int(rng.choice([-3, -2, -1, 1, 2, 3]))
        begin.append(int(rng.integers(-n - 2, n + 3)))
        end.append(int(rng.integers(-n - 2, n + 3)))
        strides.append(stride)
        begin_mask |= int(rng.random() < 0.25) << k
        end_mask |= int(rng.random() < 0.25) << k
    index = tuple(slice(None if begin_mask >> k & 1 else b, None if end_mask >> k & 1 else e, s)
                  if not shrink >> k & 1 else b for k, (b, e, s) in enumerate(zip(begin, end, strides)))
    out_shape = list(np.empty(shape)[index].shape)
    if not all(out_shape) or shrink == (1 << rank) - 1:
        return case_strided_slice(c, rng)  # empty or scalar results: draw again
    x, out = c.view(shape), c.tensor(out_shape)
    c.net.op("STRIDED_SLICE", [x, c.net.const(begin), c.net.const(end), c.net.const(strides)], [out],
             options(schema.StridedSliceOptionsT, beginMask=begin_mask, endMask=end_mask, shrinkAxisMask=shrink))
    c.result(out)


def case_slice(c, rng):
    shape = random_shape(rng, int(rng.integers(1, 6)))
    begin = [int(rng.integers(0, n)) for n in shape]
    size = [int(rng.integers(1, n - b + 1)) if rng.random() < 0.7 else -1 for n, b in zip(shape, begin)]
    out = c.tensor([n - b if s == -1 else s for n, b, s in zip(shape, begin, size)])
    c.net.op("SLICE", [c.view(shape), c.net.const(begin), c.net.const(size)], [out])
    c.result(out)


def case_transpose(c, rng):
    shape = random_shape(rng, int(rng.integers(2, 6)), high=5)
    perm = [int(p) for p in rng.permutation(len(shape))]
    out = c.tensor([shape[p] for p in perm])
    c.net.op("TRANSPOSE", [c.view(shape), c.net.const(perm)], [out])
    c.result(out)


def case_reverse(c, rng):
    shape = random_shape(rng, int(rng.integers(1, 5)))
    out = c.tensor(shape)
    c.net.op("REVERSE_V2", [c.view(shape), c.net.const([int(rng.integers(-len(shape), len(shape)))])], [out],
             options(schema.ReverseV2OptionsT))
    c.result(out)


def case_split(c, rng):
    shape = random_shape(rng, int(rng.integers(1, 5)))
    axis = int(rng.integers(-len(shape), len(shape)))
    parts = int(rng.choice([p for p in range(1, 5) if shape[axis] * p <= 12]))
    shape[axis] *= parts
    outs = [c.tensor([n // parts if k == axis % len(shape) else n for k, n in enumerate(shape)]) for _ in range(parts)]
    c.net.op("SPLIT", [c.net.const(np.int32(axis)), c.view(shape)], outs, options(schema.SplitOptionsT, numSplits=parts))
    for t in outs[::-1]:
        c.result(t)


def case_split_v(c, rng):
    shape = random_shape(rng, int(rng.integers(1, 5)))
    axis = int(rng.integers(0, len(shape)))
    sizes = [int(v) for v in rng.integers(1, 4, int(rng.integers(1, 4)))]
    shape[axis] = sum(sizes)
    outs = [c.tensor([s if k == axis else n for k, n in enumerate(shape)]) for s in sizes]
    if rng.random() < 0.5:
        sizes[int(rng.integers(len(sizes)))] = -1
    c.net.op("SPLIT_V", [c.view(shape), c.net.const(sizes), c.net.const(np.int32(axis))], outs,
             options(schema.SplitVOptionsT, numSplits=len(sizes)))
    for t in outs:
        c.result(t)


def case_unpack(c, rng):
    shape = random_shape(rng, int(rng.integers(2, 5)))
    axis = int(rng.integers(0, len(shape)))
    outs = [c.tensor(shape[:axis] + shape[axis + 1:]) for _ in range(shape[axis])]
    c.net.op("UNPACK", [c.view(shape)], outs, options(schema.UnpackOptionsT, num=shape[axis], axis=axis))
    for t in outs:
        c.result(t)


def case_pack(c, rng):
    shape = random_shape(rng, int(rng.integers(1, 4)))
    axis = int(rng.integers(0, len(shape) + 1))
    count = int(rng.integers(1, 4))
    out = c.tensor(shape[:axis] + [count] + shape[axis:])
    c.net.op("PACK", [c.view(shape) for _ in range(count)], [out],
             options(schema.PackOptionsT, valuesCount=count, axis=axis))
    c.result(out)


def case_concatenation(c, rng):
    shape = random_shape(rng, int(rng.integers(1, 5)))
    axis = int(rng.integers(-len(shape), len(shape)))
    ins = []
    for _ in range(int(rng.integers(1, 4))):
        s = list(shape)
        s[axis] = int(rng.integers(1, 4))
        ins.append(c.view(s))
    shape[axis] = sum(c.net.tensors[t].shape[axis] for t in ins)
    out = c.tensor(shape)
    c.net.op("CONCATENATION", ins, [out], options(schema.ConcatenationOptionsT, axis=axis))
    c.result(out)


def case_pad(c, rng, v2=False):
    shape = random_shape(rng, int(rng.integers(1, 6)), high=4)  # TFLite Micro: up to 5 dimensions
    pads = [[int(v) for v in rng.integers(0, 3, 2)] for _ in shape]
    zero_point = int(rng.integers(-128, 128))
    out = c.tensor([n + a + b for n, (a, b) in zip(shape, pads)], zero_point=zero_point)
    x = c.view(shape, zero_point=zero_point)
    if v2:
        value = c.net.const(np.int8(rng.integers(-128, 128)), "int8", zero_point=zero_point)
        c.net.op("PADV2", [x, c.net.const(pads), value], [out], options(schema.PadV2OptionsT))
    else:
        c.net.op("PAD", [x, c.net.const(pads)], [out], options(schema.PadOptionsT))
    c.result(out)


def case_padv2(c, rng):
    case_pad(c, rng, v2=True)


def case_space_to_depth(c, rng):
    b = int(rng.integers(2, 4))
    n, h, w, d = 1, int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
    if rng.random() < 0.5:
        out = c.tensor([n, h, w, d * b * b])
        c.net.op("SPACE_TO_DEPTH", [c.view([n, h * b, w * b, d])], [out], options(schema.SpaceToDepthOptionsT, blockSize=b))
    else:
        out = c.tensor([n, h * b, w * b, d])
        c.net.op("DEPTH_TO_SPACE", [c.view([n, h, w, d * b * b])], [out], options(schema.DepthToSpaceOptionsT, blockSize=b))
    c.result(out)


def case_resize_nearest(c, rng):
    shape = [int(rng.integers(1, 3)), *random_shape(rng, 2, 1, 7), int(rng.integers(1, 4))]
    size = [int(v) for v in rng.integers(1, 15, 2)]
    align, half = [(False, False), (True, False), (False, True)][int(rng.integers(3))]
    out = c.tensor([shape[0], *size, shape[3]])
    c.net.op("RESIZE_NEAREST_NEIGHBOR", [c.view(shape), c.net.const(size)], [out],
             options(schema.ResizeNearestNeighborOptionsT, alignCorners=align, halfPixelCenters=half))
    c.result(out)


def case_squeeze_expand(c, rng):
    shape = random_shape(rng, 3)
    shape[1] = 1
    squeezed = c.tensor([shape[0], shape[2]])
    c.net.op("SQUEEZE", [c.view(shape)], [squeezed], options(schema.SqueezeOptionsT, squeezeDims=[1]))
    out = c.tensor([shape[0], shape[2], 1])
    c.net.op("EXPAND_DIMS", [squeezed, c.net.const(np.int32(-1))], [out], options(schema.ExpandDimsOptionsT))
    c.result(out)


CASES = {"STRIDED_SLICE": (case_strided_slice, 8), "SLICE": (case_slice, 4), "TRANSPOSE": (case_transpose, 5),
         "REVERSE_V2": (case_reverse, 3), "SPLIT": (case_split, 3), "SPLIT_V": (case_split_v, 3),
         "UNPACK": (case_unpack, 3), "PACK": (case_pack, 3), "CONCATENATION": (case_concatenation, 4),
         "PAD": (case_pad, 4), "PADV2": (case_padv2, 3), "SPACE_TO_DEPTH": (case_space_to_depth, 4),
         "RESIZE_NEAREST_NEIGHBOR": (case_resize_nearest, 8), "SQUEEZE": (case_squeeze_expand, 2)}


def run_both(buf: bytes, tmp_path, name: str, rng, samples: int = 4, backend: str = "tflm", target: str = "host"):
    """Builds the model, runs it and the reference on random int8 inputs; returns the generated source."""
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(buf)
    fw = build(path, target, tmp_path / name, kernels="portable" if target == "host" else "auto")
    reference = StageInterpreter(buf, backend)
    graph = Graph(buf)
    shape = graph.tensors[graph.inputs[0]].shape
    with firmware(target, fw.binary) as dev:
        for _ in range(samples):
            x = rng.integers(-128, 128, shape).astype(np.int8)
            want = reference(x)[0].reshape(-1)
            got = dev.infer(x).output
            assert np.array_equal(got, want), f"{name}: {got[:12]} vs {want[:12]}"
    return (tmp_path / name / "model.cc").read_text()


@pytest.mark.parametrize("op", list(CASES))
def test_op_matches_tflite_micro(op, tmp_path):
    rng = np.random.default_rng(sum(map(ord, op)))
    make, count = CASES[op]
    cases = Cases(rng)
    for _ in range(count):
        make(cases, rng)
    buf = cases.finish()
    assert op in {o.op for o in Graph(buf).ops}
    run_both(buf, tmp_path, op.lower(), rng)


def test_shape_arithmetic_is_folded(tmp_path):
    """SHAPE -> STRIDED_SLICE -> PACK (Keras' Flatten without a fixed batch) and int32 SLICE/MUL/CONCATENATION
    on it become constants at generation time: the device runs only int8 operators. A constant int8 tensor
    moved by TRANSPOSE folds too and is concatenated with an activation from flash."""
    rng = np.random.default_rng(3)
    net = Net()
    x = net.tensor([1, 4, 5, 3], zero_point=4)
    shape, batch, height, width, rows, packed, new_shape = (
        net.tensor(s, "int32") for s in ([4], [], [1], [1], [1], [1], [3]))
    net.op("SHAPE", [x], [shape], options(schema.ShapeOptionsT, outType=schema.TensorType.INT32))
    net.op("STRIDED_SLICE", [shape, net.const([0]), net.const([1]), net.const([1])], [batch],
           options(schema.StridedSliceOptionsT, shrinkAxisMask=1))
    net.op("SLICE", [shape, net.const([1]), net.const([1])], [height])
    net.op("SLICE", [shape, net.const([2]), net.const([1])], [width])
    net.op("MUL", [height, width], [rows], options(schema.MulOptionsT))
    net.op("PACK", [batch], [packed], options(schema.PackOptionsT, valuesCount=1, axis=0))
    net.op("CONCATENATION", [packed, rows, net.const([-1])], [new_shape], options(schema.ConcatenationOptionsT, axis=0))
    flat = net.tensor([1, 20, 3], zero_point=4)
    net.op("RESHAPE", [x, new_shape], [flat])
    weights = net.tensor([1, 3, 2], "int8", rng.integers(-128, 128, (1, 3, 2)), zero_point=4)
    moved = net.tensor([1, 2, 3], zero_point=4)
    net.op("TRANSPOSE", [weights, net.const([0, 2, 1])], [moved])
    out = net.tensor([1, 22, 3], zero_point=4)
    net.op("CONCATENATION", [flat, moved], [out], options(schema.ConcatenationOptionsT, axis=1))
    buf = net.finish([x], [out])

    graph = Graph(buf)
    remaining = fold.runtime_ops(graph)
    assert [o.op for o in remaining] == ["RESHAPE", "CONCATENATION"]
    assert all(graph.tensors[t].dtype == "int8" for o in remaining for t in o.inputs + o.outputs
               if not graph.tensors[t].is_constant)
    assert graph.tensors[new_shape].data.tolist() == [1, 20, -1]
    source = run_both(buf, tmp_path, "folded", rng)
    assert "_const" in source  # the folded int8 constant is copied from flash


def test_fold_integer_arithmetic():
    """The int32 evaluators TFLite Micro cannot cross-check above: C-style division, floor division, GATHER,
    reductions, RANGE and FILL, on a graph folded without any device."""
    net = Net()
    a, b = net.const([7, -7, 9]), net.const([2, 2, -4])
    outs = {name: net.tensor([3], "int32") for name in ("DIV", "FLOOR_DIV", "FLOOR_MOD")}
    for name, t in outs.items():
        net.op(name, [a, b], [t])
    gathered, prod, ranged, filled = (net.tensor(s, "int32") for s in ([2], [], [3], [2, 2]))
    net.op("GATHER", [a, net.const([2, 0])], [gathered], options(schema.GatherOptionsT, axis=0))
    net.op("REDUCE_PROD", [a, net.const([0])], [prod], options(schema.ReducerOptionsT))
    net.op("RANGE", [net.const(np.int32(1)), net.const(np.int32(10)), net.const(np.int32(3))], [ranged])
    net.op("FILL", [net.const([2, 2]), net.const(np.int32(5))], [filled])
    x, y = net.tensor([2]), net.tensor([2])
    net.op("RESHAPE", [x, net.const([2])], [y])
    graph = Graph(net.finish([x], [y]))
    assert [o.op for o in fold.runtime_ops(graph)] == ["RESHAPE"]
    values = {name: graph.tensors[t].data.tolist() for name, t in outs.items()}
    assert values == {"DIV": [3, -3, -2], "FLOOR_DIV": [3, -4, -3], "FLOOR_MOD": [1, 1, -3]}
    assert graph.tensors[gathered].data.tolist() == [9, 7]
    assert graph.tensors[prod].data.tolist() == -441
    assert graph.tensors[ranged].data.tolist() == [1, 4, 7]
    assert graph.tensors[filled].data.tolist() == [[5, 5], [5, 5]]


def convert_int8_any_batch(model, calibration) -> bytes:
    """As `convert_int8`, but traced with a free batch size: shape arithmetic stays in the model (SHAPE,
    STRIDED_SLICE, PACK), as in models converted elsewhere."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def _keras(name: str):
    """(input shape, output builder, operators the conversion must contain) of each Keras case."""
    import tensorflow as tf
    from keras import layers

    def conv(x, channels=3):
        return layers.Conv2D(channels, 1)(x)

    def lam(f):
        return layers.Lambda(f)

    return {
        "reshape_any_batch": ((4, 6), lambda x: layers.Reshape((3, 8))(x), {"SHAPE", "STRIDED_SLICE"}),
        "permute_4d": ((2, 3, 4, 5), lambda x: layers.Permute((4, 2, 3, 1))(x), {"TRANSPOSE"}),
        "resizing_nearest": ((4, 5, 3), lambda x: layers.Resizing(9, 7, interpolation="nearest")(x),
                             {"RESIZE_NEAREST_NEIGHBOR"}),
        "resize_align_corners": ((4, 5, 3), lambda x: lam(lambda t: tf.compat.v1.image.resize_nearest_neighbor(
            t, (7, 13), align_corners=True))(x), {"RESIZE_NEAREST_NEIGHBOR"}),
        "concatenate_any_axis": ((4, 5, 3), lambda x: (lambda z: layers.Concatenate()([z, conv(z, 2)]))(
            layers.Concatenate(axis=1)(2 * [layers.Concatenate(axis=2)([conv(x), x, conv(x)])])),
            {"CONCATENATION"}),
        "lambda_slices": ((8, 6, 3), lambda x: lam(lambda t: t[:, ::-2, 1:, 0])(lam(lambda t: t[:, 1:7])(x)),
                          {"STRIDED_SLICE"}),
        "split": ((8, 6), lambda x: layers.Concatenate()(lam(lambda t: tf.split(t, 3, axis=2))(x)[::-1]), {"SPLIT"}),
        "split_sizes": ((8, 6), lambda x: layers.Concatenate(axis=1)(
            lam(lambda t: tf.split(t, [2, 6], axis=1))(x)[::-1]), {"SPLIT_V"}),
        "stack": ((4, 6, 3), lambda x: lam(lambda t: tf.stack(t, axis=2))([conv(x, 2), conv(x, 2)]), {"PACK"}),
        "unstack": ((3, 4, 2), lambda x: layers.Concatenate()(lam(lambda t: tf.unstack(t, axis=2))(x)[::-1]),
                    {"UNPACK"}),
        "space_depth": ((4, 6, 3), lambda x: lam(lambda t: tf.nn.depth_to_space(t, 2))(
            conv(lam(lambda t: tf.nn.space_to_depth(t, 2))(x), 8)), {"SPACE_TO_DEPTH", "DEPTH_TO_SPACE"}),
        "pad_value": ((4, 6, 3), lambda x: lam(lambda t: tf.pad(t, [[0, 0], [1, 1], [2, 0], [0, 1]],
                                                                   constant_values=0.5))(x), {"PADV2"}),
        "reverse": ((4, 6), lambda x: lam(lambda t: tf.reverse(t, [1]))(x), {"REVERSE_V2"}),
    }[name]


# Flatten (both batch kinds), Reshape, Permute, padding, cropping, UpSampling and 1-D conv/pooling are
# tests/test_keras_layers.py's (through `tinyexit sim` on host and qemu-m4)
KERAS = ["reshape_any_batch", "permute_4d", "resizing_nearest", "resize_align_corners", "concatenate_any_axis",
         "lambda_slices", "split", "split_sizes", "stack", "unstack", "space_depth", "pad_value", "reverse"]


@pytest.mark.parametrize("name", KERAS)
def test_keras_layer_matches_tflite_micro(name, tmp_path):
    """Each layer converts with `convert_int8` (or with a free batch size: its shape arithmetic folds away) and
    builds; outputs equal TFLite Micro's. TILE (Keras 3's UpSampling) has no TFLite Micro kernel: those are
    compared with LiteRT (its reference resolver lacks int8 TILE; a copy has no rounding to differ in)."""
    import keras

    rng = np.random.default_rng(sum(map(ord, name)))
    keras.utils.set_random_seed(int(rng.integers(1 << 30)))
    shape, make, expected = _keras(name)
    inp = keras.Input(shape)
    model = keras.Model(inp, make(inp))
    calibration = rng.normal(0, 1, (16, *shape)).astype(np.float32)
    buf = (convert_int8_any_batch if name.endswith("any_batch") else convert_int8)(model, calibration)
    assert expected <= {o.op for o in Graph(buf).ops}
    run_both(buf, tmp_path, name, rng, backend="litert" if "TILE" in expected else "tflm")


def test_movement_chain_on_qemu_m4(tmp_path):
    """Several of these operators in a row on the emulated Cortex-M4 (its memcpy/memset, Thumb-2 code)."""
    import keras
    import tensorflow as tf
    from keras import layers

    rng = np.random.default_rng(5)
    keras.utils.set_random_seed(5)
    inp = keras.Input((6, 5, 4))
    x = layers.ZeroPadding2D(((1, 0), (2, 1)))(inp)                    # PAD
    x = layers.Cropping2D(((0, 1), (1, 0)))(x)                         # STRIDED_SLICE
    x = layers.Permute((2, 1, 3))(x)                                   # TRANSPOSE
    x = layers.Resizing(9, 11, interpolation="nearest")(x)             # RESIZE_NEAREST_NEIGHBOR
    x = layers.Lambda(lambda t: t[:, ::-2, 1:, :])(x)                  # STRIDED_SLICE, negative stride
    a, b = layers.Lambda(lambda t: tf.split(t, 2, axis=3))(x)          # SPLIT
    x = layers.Concatenate(axis=2)([b, a])                             # CONCATENATION
    x = layers.Lambda(lambda t: tf.nn.space_to_depth(t, 2))(x[:, :4])  # SPACE_TO_DEPTH
    model = keras.Model(inp, layers.Flatten()(x))
    buf = convert_int8(model, rng.normal(0, 1, (16, 6, 5, 4)).astype(np.float32))
    ops = {o.op for o in Graph(buf).ops}
    assert {"PAD", "STRIDED_SLICE", "TRANSPOSE", "RESIZE_NEAREST_NEIGHBOR", "SPLIT", "CONCATENATION",
            "SPACE_TO_DEPTH"} <= ops, ops
    run_both(buf, tmp_path, "chain", rng, samples=6, target="qemu-m4")


def test_unsupported_parameters_are_refused_by_name():
    """What TFLite Micro refuses or would compute differently from TensorFlow is refused at generation time:
    CONCATENATION inputs quantized unlike the output (TFLite Micro does not requantize them) and
    STRIDED_SLICE's new-axis mask (TFLite Micro ignores it)."""
    from tinyexit.codegen.ops import make
    from tinyexit.errors import TinyexitError

    net = Net()
    a, b = net.tensor([1, 4], scale=0.05), net.tensor([1, 4], scale=0.1)
    joined, sliced = net.tensor([1, 8], scale=0.05), net.tensor([1, 1, 4])
    net.op("CONCATENATION", [a, b], [joined], options(schema.ConcatenationOptionsT, axis=1))
    net.op("STRIDED_SLICE", [a, net.const([0, 0]), net.const([1, 4]), net.const([1, 1])], [sliced],
           options(schema.StridedSliceOptionsT, newAxisMask=1))
    graph = Graph(net.finish([a, b], [joined, sliced]))
    with pytest.raises(TinyexitError, match="quantized differently"):
        make(graph, graph.ops[0], "l0")
    with pytest.raises(TinyexitError, match="new-axis"):
        make(graph, graph.ops[1], "l1")
