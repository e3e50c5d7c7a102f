"""TRANSPOSE_CONV, BATCH_MATMUL and the reductions (MEAN, SUM, REDUCE_MAX) against TFLite Micro: small Keras
models converted to int8, random shapes, strides, paddings and (through random calibration spreads and rewritten
output quantizations) random requantizations, host build with the portable kernels; one model using all three
kinds on the emulated Cortex-M4."""

import numpy as np
import pytest

from tinyexit.codegen.ops import OPS, make
from tinyexit.errors import TinyexitError
from tinyexit.export import convert_int8
from tinyexit.firmware_build import build
from tinyexit.harness import firmware
from tinyexit.reference import StageInterpreter
from tinyexit.tflite_graph import Graph, serialize


def _requantized_output(buf: bytes, scale: float, zero_point: int, tensor: int | None = None) -> bytes:
    """The model with the quantization of its output (or of another tensor) replaced; the reference runs the
    same file: reaches requantizations calibration rarely gives (saturation, multipliers above 1, equal input
    and output)."""
    graph = Graph(buf)
    q = graph.model.subgraphs[0].tensors[graph.outputs[0] if tensor is None else tensor].quantization
    q.scale, q.zeroPoint = [float(np.float32(scale))], [int(zero_point)]
    return serialize(graph.model)


def _random_output_quantization(buf: bytes, rng: np.random.Generator) -> bytes:
    out = Graph(buf).tensors[Graph(buf).outputs[0]]
    return _requantized_output(buf, float(out.scale[0]) * 2.0 ** rng.uniform(-4, 4), int(rng.integers(-128, 128)))


def _check(buf: bytes, shape: tuple, tmp_path, name: str, rng: np.random.Generator, op: str, target: str = "host",
           samples: int = 10, kernels: tuple = ("portable",)) -> str:
    """Builds the model (with each kernel choice) and compares every output byte with TFLite Micro's on random
    int8 inputs. Returns the generated model.cc."""
    assert op in {o.op for o in Graph(buf).ops}, [o.op for o in Graph(buf).ops]
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(buf)
    reference = StageInterpreter(buf)
    x = rng.integers(-128, 128, (samples, *shape)).astype(np.int8)
    x[0] = 127  # the extremes: largest sums, saturation
    x[1] = -128
    want = [reference(sample[None])[0].reshape(-1) for sample in x]
    for choice in kernels:
        fw = build(path, target, tmp_path / f"b_{name}_{choice}", kernels=choice)
        with firmware(target, fw.binary) as dev:
            for i, sample in enumerate(x):
                got = dev.infer(sample).output
                assert np.array_equal(got, want[i]), f"{name} ({choice}) sample {i}: {got[:8]} vs {want[i][:8]}"
    return (tmp_path / f"b_{name}_{kernels[-1]}" / "model.cc").read_text()


def _calibration(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.normal(rng.uniform(-1, 1), rng.uniform(0.3, 3), (32, *shape)).astype(np.float32)


def _transpose_conv_model(rng: np.random.Generator):
    import keras
    from keras import layers

    keras.utils.set_random_seed(int(rng.integers(1 << 30)))
    one_d = rng.random() < 0.25  # Conv1DTranspose: TRANSPOSE_CONV between two RESHAPEs
    h, w, c = int(rng.integers(1, 7)), int(rng.integers(1, 7)), int(rng.integers(1, 6))
    filters, padding, bias = int(rng.integers(1, 7)), str(rng.choice(["same", "valid"])), bool(rng.integers(2))
    k, s = tuple(int(v) for v in rng.integers(1, 5, 2)), tuple(int(v) for v in rng.integers(1, 4, 2))
    if rng.random() < 0.8:  # strides within the filter: the DSP kernel's case (else the portable one)
        s = tuple(min(a, b) for a, b in zip(s, k))
    extra = tuple(int(rng.integers(0, v)) for v in s) if rng.random() < 0.3 else None  # output_padding < stride
    if one_d:
        shape, layer = (w, c), layers.Conv1DTranspose(filters, k[1], strides=s[1], padding=padding, use_bias=bias)
    else:
        shape, layer = (h, w, c), layers.Conv2DTranspose(filters, k, strides=s, padding=padding, output_padding=extra,
                                                        use_bias=bias)
    inp = keras.Input(shape)
    out = layer(inp)
    if bias:  # zero biases (the initial ones) are left out by the converter
        layer.bias.assign(rng.normal(0, 0.5, filters))
    return keras.Model(inp, out), shape


def test_transpose_conv_matches_tflite_micro(tmp_path):
    """Portable and DSP kernels (the DSP one emulated on the host): its phases streamed (short right-shift
    requantization, even channel count) or not (left shifts from rewritten output scales, odd channel counts)."""
    import re

    rng = np.random.default_rng(7)
    modes, streamed = set(), 0
    for case in range(7):
        model, shape = _transpose_conv_model(rng)
        buf = convert_int8(model, _calibration(rng, shape))
        if case % 2:  # output scales near input scale x filter scale: multipliers near 1, left shifts, saturation
            graph = Graph(buf)
            out = graph.tensors[next(o for o in graph.ops if o.op == "TRANSPOSE_CONV").outputs[0]]
            buf = _requantized_output(buf, float(out.scale[0]) * 2.0 ** rng.uniform(-10, -5),
                                      int(rng.integers(-128, 128)), out.index)
        source = _check(buf, shape, tmp_path, f"tconv{case}", rng, "TRANSPOSE_CONV", kernels=("portable", "dsp"))
        modes |= {int(m) for m in re.findall(r"TransposeConvDspParams \w+ = \{\w+, (\d)\}", source)}
        streamed += source.count("_stream0[")
    assert len(modes) >= 2 and streamed > 0, (modes, streamed)


def _matmul_models():
    """(name, model builder, input shape): adj_y, adj_x, a constant right operand, batch broadcast on either
    side, one tensor times its own transpose in 4-D."""
    import keras
    import tensorflow as tf
    from keras import layers

    constant = np.random.default_rng(2).normal(0, 1, (2, 6, 7)).astype(np.float32)

    def keys_times_queries(x):
        return keras.ops.matmul(layers.Dense(6)(x), keras.ops.transpose(layers.Dense(6)(x), (0, 2, 1)))

    def transposed_left(x):
        return layers.Lambda(lambda t: tf.matmul(t[0], t[1], transpose_a=True))([layers.Dense(6)(x), layers.Dense(3)(x)])

    def constant_right(x):
        return layers.Lambda(lambda t: tf.matmul(t, constant))(layers.Dense(6)(x))

    def broadcast_right(x):
        return keras.ops.matmul(layers.Dense(6)(x), layers.Reshape((1, 6, 2))(layers.Dense(12)(layers.Flatten()(x))))

    def broadcast_left(x):
        return keras.ops.matmul(layers.Reshape((1, 4, 3))(layers.Dense(12)(layers.Flatten()(x))), layers.Dense(2)(x))

    def self_product(x):
        return keras.ops.matmul(x, keras.ops.transpose(x, (0, 1, 3, 2)))

    return [("adj_y", keys_times_queries, (5, 4)), ("adj_x", transposed_left, (5, 4)),
            ("constant", constant_right, (2, 5, 4)), ("broadcast_rhs", broadcast_right, (3, 5, 4)),
            ("broadcast_lhs", broadcast_left, (3, 3, 6)), ("self", self_product, (2, 3, 4))]


@pytest.mark.parametrize("case", range(6))
def test_batch_matmul_matches_tflite_micro(case, tmp_path):
    import keras

    name, body, shape = _matmul_models()[case]
    rng = np.random.default_rng(case)
    keras.utils.set_random_seed(case)
    inp = keras.Input(shape)
    buf = convert_int8(keras.Model(inp, body(inp)), _calibration(rng, shape))
    if case % 2:  # requantization by a multiplier above 1 or far below, saturating
        buf = _random_output_quantization(buf, rng)
    _check(buf, shape, tmp_path, name, rng, "BATCH_MATMUL", samples=8)


def _reduction_models():
    """(name, model builder, input shape, the operator it lowers to)."""
    import keras
    from keras import layers

    return [
        ("global_max_1d", lambda x: layers.GlobalMaxPooling1D()(x), (7, 5), "REDUCE_MAX"),
        ("global_max_2d", lambda x: layers.GlobalMaxPooling2D(keepdims=True)(x), (4, 5, 3), "REDUCE_MAX"),
        ("max_axes_1_3", lambda x: keras.ops.max(x, axis=(1, 3)), (4, 5, 3), "REDUCE_MAX"),
        ("global_avg_1d", lambda x: layers.GlobalAveragePooling1D()(layers.Dense(4)(x)), (9, 3), "MEAN"),
        ("global_avg_2d_keep", lambda x: layers.GlobalAveragePooling2D(keepdims=True)(x), (6, 7, 2), "MEAN"),
        ("mean_channels", lambda x: keras.ops.mean(x, axis=-1, keepdims=True), (4, 5, 3), "MEAN"),
        ("mean_axes_1_3", lambda x: keras.ops.mean(x, axis=(1, 3)), (3, 4, 5), "MEAN"),
        ("sum_channels", lambda x: keras.ops.sum(x, axis=-1), (4, 5, 3), "SUM"),
        ("sum_spatial", lambda x: keras.ops.sum(x, axis=(1, 2)), (3, 4, 2), "SUM"),
        ("avg_pool_1d", lambda x: layers.AveragePooling1D(3, strides=2, padding="same")(x), (9, 4), "AVERAGE_POOL_2D"),
        ("max_pool_1d", lambda x: layers.MaxPooling1D(2)(x), (8, 3), "MAX_POOL_2D"),
    ]


MOVEMENT = {"EXPAND_DIMS", "RESHAPE", "SQUEEZE"}


@pytest.mark.parametrize("case", range(11))
def test_reductions_match_tflite_micro(case, tmp_path):
    """Global pooling and reductions, keepdims or not. MEAN and SUM also with the output rewritten to the input's
    quantization (older TFLite Micro averaged such a MEAN with truncation; this one rescales as usual) and to
    random ones (saturation, multipliers above 1)."""
    import keras

    name, body, shape, op = _reduction_models()[case]
    rng = np.random.default_rng(100 + case)
    keras.utils.set_random_seed(case)
    inp = keras.Input(shape)
    buf = convert_int8(keras.Model(inp, body(inp)), _calibration(rng, shape))
    missing = {o.op for o in Graph(buf).ops} - set(OPS)
    if missing and missing <= MOVEMENT:  # 1-D pooling lowers to EXPAND_DIMS or RESHAPE + 2-D pool + RESHAPE
        pytest.skip(f"{name} needs {', '.join(sorted(missing))}, not in tinyexit.codegen.ops.OPS yet (movement ops)")
    _check(buf, shape, tmp_path, name, rng, op)
    if op in ("MEAN", "SUM"):
        graph = Graph(buf)
        reduce = next(o for o in graph.ops if o.op == op)
        source = graph.tensors[reduce.inputs[0]]
        if op == "MEAN":
            _check(_requantized_output(buf, float(source.scale[0]), int(source.zero_point[0])), shape, tmp_path,
                   name + "_same", rng, op)
        _check(_random_output_quantization(buf, rng), shape, tmp_path, name + "_requant", rng, op)


def test_unsupported_reductions_and_products_say_why():
    import keras
    from keras import layers

    rng = np.random.default_rng(0)
    inp = keras.Input((3, 4, 5))
    buf = convert_int8(keras.Model(inp, keras.ops.mean(inp, axis=(1, 2, 3))), _calibration(rng, (3, 4, 5)))
    graph = Graph(buf)
    mean = next(o for o in graph.ops if o.op == "MEAN")
    with pytest.raises(TinyexitError, match="at most 2"):
        make(graph, mean, "l0")
    inp = keras.Input((4, 4, 2))
    buf = convert_int8(keras.Model(inp, layers.GlobalMaxPooling2D()(inp)), _calibration(rng, (4, 4, 2)))
    graph = Graph(_requantized_output(buf, 0.5, 3))
    with pytest.raises(TinyexitError, match="REDUCE_MAX .* requantizes"):
        make(graph, graph.ops[0], "l0")


def test_macs_count_the_products_computed(tmp_path):
    """TRANSPOSE_CONV: the products landing inside the output (counted here by scattering as TFLite Micro does);
    BATCH_MATMUL: one per output value and depth."""
    import keras
    from keras import layers

    rng = np.random.default_rng(3)
    for shape, filters, k, s, padding in [((3, 4, 2), 5, (3, 2), (2, 3), "same"), ((2, 5, 3), 2, (4, 1), (1, 2), "valid")]:
        inp = keras.Input(shape)
        buf = convert_int8(keras.Model(inp, layers.Conv2DTranspose(filters, k, strides=s, padding=padding)(inp)),
                           _calibration(rng, shape))
        graph = Graph(buf)
        op = graph.ops[0]
        _, out_h, out_w, _ = graph.tensors[op.outputs[0]].shape
        pad = [0, 0]
        if padding == "same":
            pad = [max((-(-o // st) - 1) * st + kk - o, 0) // 2 for o, st, kk in zip((out_h, out_w), s, k)]
        landing = sum(0 <= y * s[0] - pad[0] + ky < out_h and 0 <= x * s[1] - pad[1] + kx < out_w
                      for y in range(shape[0]) for x in range(shape[1]) for ky in range(k[0]) for kx in range(k[1]))
        assert graph.macs(op) == landing * shape[2] * filters
    name, body, shape = _matmul_models()[1]  # adj_x: depth is the left operand's second-to-last dimension
    inp = keras.Input(shape)
    graph = Graph(convert_int8(keras.Model(inp, body(inp)), _calibration(rng, shape)))
    op = next(o for o in graph.ops if o.op == "BATCH_MATMUL")
    assert graph.macs(op) == 6 * 3 * 5


def test_transpose_conv_matmul_and_reduction_on_qemu_m4(tmp_path):
    """The kernels compiled for and run on the emulated Cortex-M4: a decoder-style upsampling (the DSP
    TRANSPOSE_CONV, its SMLAD assembly), the channels' Gram matrix (BATCH_MATMUL, adj_x) and a global max."""
    import keras
    from keras import layers

    rng = np.random.default_rng(11)
    keras.utils.set_random_seed(11)
    inp = keras.Input((4, 4, 3))
    up = layers.Conv2DTranspose(6, 3, strides=2, padding="same")(inp)
    flat = layers.Reshape((64, 6))(up)
    gram = layers.Lambda(lambda t: keras.ops.matmul(keras.ops.transpose(t, (0, 2, 1)), t))(flat)
    model = keras.Model(inp, layers.GlobalMaxPooling1D()(gram))
    buf = convert_int8(model, _calibration(rng, (4, 4, 3)))
    ops = {o.op for o in Graph(buf).ops}
    assert {"TRANSPOSE_CONV", "BATCH_MATMUL", "REDUCE_MAX"} <= ops, ops
    source = _check(buf, (4, 4, 3), tmp_path, "m4", rng, "TRANSPOSE_CONV", target="qemu-m4", samples=6,
                    kernels=("auto",))
    assert "dsp::transpose_conv_s8(" in source  # the Cortex-M4 has the DSP extension: the phase GEMM ran
