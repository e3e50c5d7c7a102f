"""Elementwise operators and activations (tinyexit/codegen/ops/elementwise.py, kernels_elementwise.h) against
TFLite Micro: each unary activation on every int8 input value at a few random quantizations, each binary
operator on random shapes, broadcast patterns, constant operands and quantizations (host, portable kernels),
and the whole set chained in one model on the emulated Cortex-M4."""

import numpy as np
import pytest

from tinyexit.export import convert_int8
from tinyexit.firmware_build import build
from tinyexit.harness import firmware
from tinyexit.reference import StageInterpreter
from tinyexit.tflite_graph import Graph

ALL_INT8 = np.arange(-128, 128, dtype=np.int8)


def _run(model, calibration: np.ndarray, expect: str, samples: np.ndarray, tmp_path, name: str,
         target: str = "host", kernels: tuple = ("portable",)) -> tuple[Graph, list[str]]:
    """Convert, build (each kernel variant) and compare every sample's output with TFLite Micro's; returns
    the converted graph and each build's generated source."""
    buf = convert_int8(model, calibration)
    graph = Graph(buf)
    assert expect in {op.op for op in graph.ops}, [op.op for op in graph.ops]
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(buf)
    reference = StageInterpreter(buf)
    want = [reference(sample[None])[0].reshape(-1) for sample in samples]
    sources = []
    for variant in kernels:
        out = tmp_path / f"build_{name}_{variant}"
        fw = build(path, target, out, kernels=variant)
        sources.append((out / "model.cc").read_text())
        with firmware(target, fw.binary) as dev:
            for sample, expected in zip(samples, want):
                got = dev.infer(sample).output
                assert np.array_equal(got, expected), (f"{name} ({variant}): {np.flatnonzero(got != expected)[:8]} "
                                                       f"differ: {got[:8]} vs {expected[:8]}")
    return graph, sources


# unary: the activation applied to the model input itself, so one inference covers all 256 input values
UNARY = {
    "LOGISTIC": lambda layers, keras, rng: layers.Activation("sigmoid"),
    "TANH": lambda layers, keras, rng: layers.Activation("tanh"),
    "HARD_SWISH": lambda layers, keras, rng: layers.Activation("hard_swish"),
    "RELU": lambda layers, keras, rng: layers.ReLU(),
    "RELU6": lambda layers, keras, rng: layers.ReLU(max_value=6.0),
    "LEAKY_RELU": lambda layers, keras, rng: layers.LeakyReLU(negative_slope=float(rng.uniform(0.01, 0.9))),
    # keras' layer refuses negative slopes; its op does not, and TFLite Micro handles them
    "LEAKY_RELU negative": lambda layers, keras, rng: layers.Lambda(
        lambda t, s=-float(rng.uniform(0.1, 2.0)): keras.ops.leaky_relu(t, s)),
}


@pytest.mark.parametrize("kind", [*UNARY, "QUANTIZE"])
def test_unary_activation_on_every_input_value(kind, tmp_path):
    import keras
    from keras import layers

    rng = np.random.default_rng(sum(map(ord, kind)))
    # a narrow and a wide input range: saturation at both ends and the fixed-point radius
    for case, (center, spread) in enumerate([(rng.uniform(-0.5, 0.5), rng.uniform(0.05, 0.5)),
                                             (rng.uniform(-3, 3), rng.uniform(2, 12))]):
        keras.utils.set_random_seed(int(rng.integers(1 << 30)))
        inp = keras.Input((256,))
        if kind == "QUANTIZE":  # LOGISTIC's and TANH's fixed output scales are requantized to a concatenation's
            fixed = layers.Activation(["sigmoid", "tanh"][case])(inp)
            out = layers.Concatenate()([fixed, layers.Dense(8)(inp)])
        else:
            out = UNARY[kind](layers, keras, rng)(inp)
        calibration = rng.normal(center, spread, (64, 256)).astype(np.float32)
        _run(keras.Model(inp, out), calibration, kind.split()[0], ALL_INT8[None], tmp_path, f"case{case}")


def test_broadcast_loops_merge_dimensions():
    """The binary kernels' loop nest (kernels_elementwise.h Broadcast): sizes, then each input's strides."""
    from tinyexit.codegen.ops.elementwise import broadcast_loops

    # squeeze-and-excite [1, H, W, C] x [1, 1, 1, C]: H * W rows of C, the second input's row repeated
    assert broadcast_loops((1, 6, 5, 8), (1, 1, 1, 8), (1, 6, 5, 8)) == ([1, 1, 30, 8], [0, 0, 8, 1], [0, 0, 0, 1])
    assert broadcast_loops((1, 4, 4, 3), (), (1, 4, 4, 3)) == ([1, 1, 1, 48], [0, 0, 0, 1], [0, 0, 0, 0])
    assert broadcast_loops((1, 6, 5, 4), (6, 1, 1), (1, 6, 5, 4)) == ([1, 1, 6, 20], [0, 0, 20, 1], [0, 0, 1, 0])
    # both sides broadcast, alternately
    assert broadcast_loops((1, 5, 1), (4, 1, 3), (4, 5, 3)) == ([1, 4, 5, 3], [0, 0, 1, 0], [0, 3, 0, 1])
    with pytest.raises(ValueError):
        broadcast_loops((1, 3), (1, 4), (1, 4))


def _binary_operands(pattern: str, inp, c: int, rng):
    """(a, b) from the model input: b broadcast against a as the pattern says, or a constant."""
    from keras import layers

    h, w = inp.shape[1], inp.shape[2]
    a = layers.Conv2D(c, 1)(inp)
    if pattern == "same":
        return a, layers.Conv2D(c, 1, use_bias=False)(inp)
    if pattern == "shared_scale":  # both inputs quantized alike (max pooling keeps its input's quantization)
        return layers.MaxPooling2D(2, strides=1, padding="same")(inp), inp
    if pattern == "squeeze_excite":  # [1, 1, 1, C]
        return a, layers.Conv2D(c, 1, activation="sigmoid")(layers.GlobalAveragePooling2D(keepdims=True)(inp))
    if pattern == "row":  # [1, 1, W, C]: broadcast over an outer dimension only
        return a, layers.Conv2D(c, 1)(layers.AveragePooling2D((h, 1))(inp))
    if pattern == "pixel":  # [1, H, W, 1]: broadcast over the channels (the innermost loop)
        return a, layers.Conv2D(1, 1)(inp)
    # constants meet the input itself (after a convolution the converter would fold them into it)
    if pattern == "constant_channels":  # [C], as a standalone BatchNormalization's
        return inp, rng.normal(0, 1.5, (c,)).astype(np.float32)
    if pattern == "constant_rows":  # [H, 1, 1]
        return inp, rng.normal(0, 1.5, (h, 1, 1)).astype(np.float32)
    if pattern == "constant_first":  # [1, W, C] - x
        return rng.normal(0, 1.5, (1, w, c)).astype(np.float32), inp
    if pattern == "scalar":
        return inp, np.float32(rng.uniform(0.2, 2.0))
    raise ValueError(pattern)


def _binary_layer(kind: str, a, b):
    from keras import layers, ops

    if not isinstance(a, np.ndarray | np.float32) and not isinstance(b, np.ndarray | np.float32):
        layer = {"ADD": layers.Add, "SUB": layers.Subtract, "MUL": layers.Multiply, "MAXIMUM": layers.Maximum,
                 "MINIMUM": layers.Minimum}[kind]
        return layer()([a, b])
    op = {"ADD": ops.add, "SUB": ops.subtract, "MUL": ops.multiply, "MAXIMUM": ops.maximum,
          "MINIMUM": ops.minimum}[kind]
    return op(a, b)


BINARY_PATTERNS = {
    "ADD": ["same", "shared_scale", "squeeze_excite", "constant_first"],  # [C] constants: the batch norm test
    "SUB": ["row", "pixel", "shared_scale", "constant_first", "scalar"],
    "MUL": ["squeeze_excite", "pixel", "constant_channels", "constant_rows"],
    "MAXIMUM": ["same", "pixel", "scalar"],
    "MINIMUM": ["row", "constant_channels", "constant_first"],
}


@pytest.mark.parametrize("kind", list(BINARY_PATTERNS))
def test_binary_operator_broadcasts(kind, tmp_path):
    import keras
    from keras import layers

    rng = np.random.default_rng(sum(map(ord, kind)))
    for pattern in BINARY_PATTERNS[kind]:
        keras.utils.set_random_seed(int(rng.integers(1 << 30)))
        h, w = (int(v) for v in rng.integers(2, 7, 2))
        c = int(rng.choice([1, 3, 4, 5]))
        inp = keras.Input((h, w, c))
        out = _binary_layer(kind, *_binary_operands(pattern, inp, c, rng))
        if kind in ("ADD", "SUB", "MUL") and rng.integers(2):  # fused into the operator
            out = layers.ReLU(max_value=[None, 6.0][int(rng.integers(2))])(out)
        calibration = rng.normal(rng.uniform(-1, 1), rng.uniform(0.3, 4), (32, h, w, c)).astype(np.float32)
        samples = rng.integers(-128, 128, (6, h, w, c)).astype(np.int8)
        variants = ("portable", "dsp") if kind in ("ADD", "SUB", "MUL") else ("portable",)  # dsp/: emulated
        _run(keras.Model(inp, out), calibration, kind, samples, tmp_path, pattern, kernels=variants)


def test_mul_shifting_left(tmp_path):
    """A product of wide inputs clipped to ReLU6's narrow output: MUL's multiplier exceeds 1 (a left shift),
    dsp.h's other short requantization."""
    import keras
    from keras import layers

    from tinyexit.codegen.ops import make

    rng = np.random.default_rng(5)
    keras.utils.set_random_seed(5)
    inp = keras.Input((4, 5, 3))
    out = layers.ReLU(max_value=6.0)(layers.Multiply()([layers.Conv2D(3, 1)(inp), layers.Conv2D(3, 1)(inp)]))
    calibration = rng.normal(0, 30, (32, 4, 5, 3)).astype(np.float32)
    samples = rng.integers(-128, 128, (6, 4, 5, 3)).astype(np.int8)
    graph, _ = _run(keras.Model(inp, out), calibration, "MUL", samples, tmp_path, "left", kernels=("portable", "dsp"))
    mul = make(graph, next(op for op in graph.ops if op.op == "MUL"), "mul")
    assert 0 <= mul.multiplier()[1] <= 14 and mul.dsp()


def test_batch_normalization_and_prelu(tmp_path):
    """A standalone BatchNormalization right after the input and after an Add (MUL and ADD with constant
    per-channel tensors) and PReLU with alphas of either sign, per element or shared over axes."""
    import keras
    from keras import layers

    rng = np.random.default_rng(7)
    keras.utils.set_random_seed(7)

    def batch_norm(x):
        bn = layers.BatchNormalization()
        y = bn(x)
        c = x.shape[-1]
        bn.set_weights([rng.uniform(0.3, 3, c), rng.normal(0, 1, c), rng.normal(0, 1, c), rng.uniform(0.2, 4, c)])
        return y

    def prelu(x, shared_axes):
        layer = layers.PReLU(shared_axes=shared_axes)
        y = layer(x)
        layer.set_weights([rng.uniform(-1.0, 1.5, layer.get_weights()[0].shape)])
        return y

    inp = keras.Input((5, 6, 4))
    x = batch_norm(inp)
    x = batch_norm(layers.Add()([layers.Conv2D(4, 1)(x), layers.Conv2D(4, 3, padding="same")(x)]))
    x = prelu(x, None)  # alpha [H, W, C]
    x = prelu(layers.Conv2D(4, 1)(x), [1, 2])  # [1, 1, C]
    out = prelu(layers.Conv2D(3, 1)(x), [3])  # [H, W, 1]
    calibration = rng.normal(0.3, 2, (32, 5, 6, 4)).astype(np.float32)
    samples = rng.integers(-128, 128, (8, 5, 6, 4)).astype(np.int8)
    graph, _ = _run(keras.Model(inp, out), calibration, "PRELU", samples, tmp_path, "bn_prelu",
                    kernels=("portable", "dsp"))
    ops = [op.op for op in graph.ops]
    assert ops.count("MUL") == 2 and ops.count("ADD") == 3 and ops.count("PRELU") == 3, ops


def test_elementwise_chain_on_qemu_m4(tmp_path):
    """Every operator of this file in one model (swish, squeeze-and-excite, hard swish, batch norm, leaky and
    parametric ReLU, hard sigmoid, ReLU with a max value, tanh, sub/max/min with broadcasts and constants) on
    the emulated Cortex-M4."""
    import keras
    from keras import layers, ops

    rng = np.random.default_rng(3)
    keras.utils.set_random_seed(3)
    inp = keras.Input((6, 5, 8))
    x = layers.BatchNormalization()(inp)
    x = layers.Activation("swish")(layers.Conv2D(8, 3, padding="same")(x))  # LOGISTIC, MUL
    se = layers.Conv2D(8, 1, activation="sigmoid")(layers.GlobalAveragePooling2D(keepdims=True)(x))
    x = layers.Multiply()([x, se])  # [1, 6, 5, 8] x [1, 1, 1, 8]
    x = layers.Activation("hard_swish")(layers.Conv2D(8, 1)(x))
    x = layers.LeakyReLU(negative_slope=0.2)(layers.Add()([x, ops.multiply(inp, 0.5)]))
    x = layers.PReLU(shared_axes=[1, 2])(layers.Conv2D(8, 1)(x))
    x = layers.Subtract()([x, layers.Conv2D(1, 1)(x)])  # [.., 8] - [.., 1]
    x = layers.Maximum()([layers.Conv2D(8, 1)(x), ops.multiply(inp, 0.25)])
    x = layers.Minimum()([x, layers.Activation("relu6")(layers.Conv2D(8, 1)(inp))])
    x = layers.Activation("hard_sigmoid")(x)  # ADD and MUL with scalar constants
    x = layers.ReLU(max_value=1.5)(layers.Add()([x, layers.Conv2D(8, 1)(x)]))  # MINIMUM with a constant, RELU
    t = layers.Activation("tanh")(layers.Conv2D(4, 1)(x))
    out = layers.Concatenate()([t, layers.Conv2D(4, 1)(x)])  # TANH's output requantized: QUANTIZE
    calibration = rng.normal(0, 1.5, (32, 6, 5, 8)).astype(np.float32)
    samples = rng.integers(-128, 128, (4, 6, 5, 8)).astype(np.int8)
    graph, (source,) = _run(keras.Model(inp, out), calibration, "QUANTIZE", samples, tmp_path, "chain",
                            target="qemu-m4", kernels=("auto",))
    wanted = {"LOGISTIC", "MUL", "HARD_SWISH", "ADD", "LEAKY_RELU", "PRELU", "SUB", "MAXIMUM", "MINIMUM", "RELU",
              "TANH", "QUANTIZE"}
    assert wanted <= {op.op for op in graph.ops}, wanted - {op.op for op in graph.ops}
    for kernel in ("dsp::add_s8", "dsp::sub_s8", "dsp::mul_s8"):  # their assembly ran, not an emulation
        assert kernel in source, kernel
