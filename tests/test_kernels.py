"""Each firmware kernel against TFLite Micro on random shapes, strides, paddings, activations and (through
random weights and calibration data) random quantization parameters. Single-op models, host build, with the
portable kernels and with the Cortex-M DSP kernels (their instructions emulated in C++)."""

import numpy as np
import pytest

from tinyexit.export import convert_int8
from tinyexit.firmware_build import build
from tinyexit.harness import firmware
from tinyexit.reference import StageInterpreter
from tinyexit.tflite_graph import Graph


def _model(kind: str, rng: np.random.Generator):
    import keras
    from keras import layers

    keras.utils.set_random_seed(int(rng.integers(1 << 30)))
    h, w = (int(v) for v in rng.integers(3, 12, 2))
    c = int(rng.choice([1, 3, 4, 8, 9, 12]))  # multiples of 4 take the DSP kernels' grouped paths
    inp = keras.Input((h, w, c))
    padding = str(rng.choice(["same", "valid"]))
    stride = int(rng.integers(1, 3))
    act = str(rng.choice(["none", "relu", "relu6"]))
    finish = {"none": lambda x: x, "relu": layers.ReLU(), "relu6": layers.ReLU(max_value=6.0)}[act]
    k = (int(rng.integers(1, min(h, 4) + 1)), int(rng.integers(1, min(w, 4) + 1)))
    if kind == "conv":
        out = finish(layers.Conv2D(int(rng.integers(1, 9)), k, strides=stride, padding=padding,
                                   use_bias=bool(rng.integers(2)))(inp))
    elif kind == "depthwise":
        out = finish(layers.DepthwiseConv2D(k, strides=stride, padding=padding, depth_multiplier=int(rng.integers(1, 3)))(inp))
    elif kind == "dense":
        out = finish(layers.Dense(int(rng.integers(1, 20)))(layers.Flatten()(inp)))
    elif kind == "avg_pool":
        out = layers.AveragePooling2D(k, strides=stride, padding=padding)(inp)
    elif kind == "max_pool":
        out = layers.MaxPooling2D(k, strides=stride, padding=padding)(inp)
    elif kind == "add":
        a = layers.Conv2D(c, 1)(inp)
        out = finish(layers.Add()([a, layers.Conv2D(c, 1, use_bias=False)(inp)]))
    elif kind == "softmax":
        out = layers.Softmax()(layers.Dense(int(rng.integers(2, 16)))(layers.Flatten()(inp)))
    elif kind == "pad":
        top, bottom, left, right = (int(v) for v in rng.integers(0, 3, 4))
        out = layers.ZeroPadding2D(((top, bottom), (left, right)))(layers.Conv2D(c, 1)(inp))
    elif kind == "mean":
        keepdims = bool(rng.integers(2))
        out = layers.GlobalAveragePooling2D(keepdims=keepdims)(layers.Conv2D(c, 1)(inp))
    elif kind == "concat":
        out = layers.Concatenate()([layers.MaxPooling2D(1)(inp), layers.AveragePooling2D(1)(inp)])
    return keras.Model(inp, out), (h, w, c)


def dsp_modes(source: str) -> list[int]:
    """fast_mode of each DSP layer in a generated model.cc (kernels.h: the field's place in each parameter
    struct; the depthwise plane kernel takes fast_mode 1 only)."""
    import re

    field = {"Gemm": 5, "GemmPacked": 6, "Depthwise": 4, "DepthwisePacked": 5}
    modes = []
    for kind, fields in re.findall(r"static const (\w+)(?:Dsp|Plane)Params \w+_dsp = \{(.*)\};", source):
        modes.append(1 if kind == "Depthwise" and "_taps" in fields else int(fields.split(", ")[field[kind]]))
    return modes


OPS = {"conv": "CONV_2D", "depthwise": "DEPTHWISE_CONV_2D", "dense": "FULLY_CONNECTED",
       "avg_pool": "AVERAGE_POOL_2D", "max_pool": "MAX_POOL_2D", "add": "ADD", "concat": "CONCATENATION", "softmax": "SOFTMAX",
       "pad": "PAD", "mean": "MEAN"}


@pytest.mark.parametrize("kind", list(OPS))
def test_kernel_matches_tflite_micro(kind, tmp_path):
    rng = np.random.default_rng(sum(map(ord, kind)))
    for case in range(3):
        model, shape = _model(kind, rng)
        spread = float(rng.uniform(0.5, 4.0))
        calibration = rng.normal(rng.uniform(-1, 1), spread, (32, *shape)).astype(np.float32)
        buf = convert_int8(model, calibration)
        graph = Graph(buf)
        assert OPS[kind] in {op.op for op in graph.ops}
        path = tmp_path / f"{kind}{case}.tflite"
        path.write_bytes(buf)
        reference = StageInterpreter(buf)
        x = rng.integers(-128, 128, (12, *shape)).astype(np.int8)
        want = [reference(sample[None])[0].reshape(-1) for sample in x]
        for kernels in ("portable", "dsp"):
            fw = build(path, "host", tmp_path / f"b{case}", kernels=kernels)
            with firmware("host", fw.binary) as dev:
                for sample, expected in zip(x, want):
                    got = dev.infer(sample).output
                    assert np.array_equal(got, expected), f"{kind} case {case} ({kernels}): {got[:8]} vs {expected[:8]}"


def test_dsp_requantization_modes_on_qemu_m4(tmp_path):
    """The DSP kernels' short requantizations (right and left shifts, dsp.h) on the emulated Cortex-M4 itself:
    int8 layers shift right; layers narrowed to 2-bit weights have their scale x 127 and shift left."""
    from tests.test_subbyte import _narrowed, _single_op

    rng = np.random.default_rng(11)
    models = []
    for kind in ("conv", "depthwise", "dense"):
        model, shape = _single_op(kind, rng)
        calibration = rng.normal(0, 1, (32, *shape)).astype(np.float32)
        models.append((convert_int8(model, calibration), shape))
        models.append(_narrowed(kind, 2, rng))
    modes, streamed = set(), 0
    for i, (buf, shape) in enumerate(models):
        path = tmp_path / f"m{i}.tflite"
        path.write_bytes(buf)
        fw = build(path, "qemu-m4", tmp_path / f"b{i}")
        source = (tmp_path / f"b{i}" / "model.cc").read_text()
        modes |= set(dsp_modes(source))
        streamed += source.count("_stream[")
        reference = StageInterpreter(buf)
        x = rng.integers(-128, 128, (6, *shape)).astype(np.int8)
        with firmware("qemu-m4", fw.binary) as dev:
            for sample in x:
                assert np.array_equal(dev.infer(sample).output, reference(sample[None])[0].reshape(-1)), path.name
    assert {1, 2} <= modes or {1, 3} <= modes, modes  # right shifts, and left ones (alone or mixed)
    assert streamed > 0  # the streamed kernels' assembly (gemm_stream.cc, depthwise_stream.cc) ran too


@pytest.mark.parametrize("target", ["host", "qemu-m4"])
def test_dsp_gemm_layouts_match_tflite_micro(target, tmp_path):
    """The DSP GEMM's column layouts (dsp/column.h) in one chain of layers, on the host (instructions emulated)
    and on the emulated Cortex-M4 (the assembly): a first layer on 3 channels whose filter rows are not whole
    words, a dilated filter on 5 channels (one run per tap), 1x1 on 6 channels, a 1-channel 10x4 filter
    (KWS's first layer) and a dense layer on a vector that is not whole words, each with border pixels; the
    last word of each run reads past it (zero weights)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(5)
    inp = keras.Input((17, 15, 3))
    x = layers.Conv2D(5, 3, strides=2, padding="same", activation="relu")(inp)
    x = layers.Conv2D(6, 3, dilation_rate=2, padding="same")(x)
    x = layers.Conv2D(1, 1, activation="relu")(x)
    x = layers.Conv2D(4, (4, 3), padding="same")(x)
    out = layers.Dense(7)(layers.Flatten()(layers.Conv2D(3, 1, strides=3)(x)))
    rng = np.random.default_rng(3)
    buf = convert_int8(keras.Model(inp, out), rng.normal(0, 1, (32, 17, 15, 3)).astype(np.float32))
    path = tmp_path / "chain.tflite"
    path.write_bytes(buf)
    reference = StageInterpreter(buf)
    fw = build(path, target, tmp_path / "b", kernels="dsp")
    assert "_dsp = {" in (tmp_path / "b" / "model.cc").read_text()
    with firmware(target, fw.binary) as dev:
        for sample in rng.integers(-128, 128, (8, 17, 15, 3)).astype(np.int8):
            assert np.array_equal(dev.infer(sample).output, reference(sample[None])[0].reshape(-1))


@pytest.mark.parametrize("target", ["host", "qemu-m4"])
def test_dead_channels_keep_the_short_requantization(target, tmp_path):
    """Channels whose weights are all zero (common in pretrained MobileNets) get biases near 2^30 from the
    converter; the code generator gives them a small bias that yields the same constant, so their layers keep
    the DSP kernels' short requantization (a fast_mode, not 0), and the outputs stay TFLite Micro's."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(7)
    inp = keras.Input((9, 9, 8))
    conv = layers.Conv2D(8, 1, activation="relu")  # depthwise on a multiple of 4 channels: its DSP kernel
    depthwise = layers.DepthwiseConv2D(3, padding="same")
    dense = layers.Dense(5)
    out = dense(layers.Flatten()(depthwise(conv(inp))))
    model = keras.Model(inp, out)
    for layer, dead in ((conv, [1, 4]), (depthwise, [2]), (dense, [0, 3])):
        kernel, bias = layer.get_weights()
        if layer is depthwise:
            kernel[:, :, dead, :] = 0.0  # (kh, kw, channels, multiplier)
        else:
            kernel[..., dead] = 0.0
        bias[dead] = np.linspace(0.8, -0.9, len(dead))
        layer.set_weights([kernel, bias])
    rng = np.random.default_rng(2)
    buf = convert_int8(model, rng.normal(0, 1, (32, 9, 9, 8)).astype(np.float32))
    graph = Graph(buf)
    biases = [graph.tensors[op.inputs[2]].data for op in graph.ops if len(op.inputs) > 2]
    assert any(np.abs(b).max() >= 1 << 29 for b in biases)  # the converter's huge biases are there
    path = tmp_path / "dead.tflite"
    path.write_bytes(buf)
    fw = build(path, target, tmp_path / "b", kernels="dsp")
    modes = dsp_modes((tmp_path / "b" / "model.cc").read_text())
    assert len(modes) == 3 and 0 not in modes, modes
    reference = StageInterpreter(buf)
    with firmware(target, fw.binary) as dev:
        for sample in rng.integers(-128, 128, (8, 9, 9, 8)).astype(np.int8):
            assert np.array_equal(dev.infer(sample).output, reference(sample[None])[0].reshape(-1))


@pytest.mark.parametrize("target", ["host", "qemu-m4"])
def test_full_width_filters_run_as_one_row(target, tmp_path):
    """CONV_2D filters spanning the input's whole width (1-D models written as (k x 1) convolutions) are given to
    the kernels transposed, so a receptive field is one contiguous run: valid and same padding, stride 2 and
    dilation 2, portable and DSP kernels, against TFLite Micro."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(9)
    inp = keras.Input((17, 3, 5))
    x = layers.Conv2D(6, (4, 3), activation="relu")(inp)  # 17x3 -> 14x1, whole width, valid
    x = layers.Conv2D(6, (5, 1), strides=(2, 1), padding="same")(x)  # whole width 1, padded rows
    x = layers.Conv2D(4, (3, 1), dilation_rate=(2, 1), padding="same", activation="relu")(x)
    out = layers.Dense(5)(layers.Flatten()(x))
    rng = np.random.default_rng(4)
    buf = convert_int8(keras.Model(inp, out), rng.normal(0, 1, (32, 17, 3, 5)).astype(np.float32))
    path = tmp_path / "rows.tflite"
    path.write_bytes(buf)
    reference = StageInterpreter(buf)
    x = rng.integers(-128, 128, (8, 17, 3, 5)).astype(np.int8)
    for kernels in ("portable", "dsp"):
        fw = build(path, target, tmp_path / kernels, kernels=kernels)
        source = (tmp_path / kernels / "model.cc").read_text()
        assert "ConvParams s0_l0_params = {{1, 1, 17, 15}, {6, 1, 4, 15}, {1, 1, 14, 6}" in source
        with firmware(target, fw.binary) as dev:
            for sample in x:
                assert np.array_equal(dev.infer(sample).output, reference(sample[None])[0].reshape(-1)), kernels


@pytest.mark.parametrize("target", ["host", "qemu-m4"])
def test_depthwise_plane_kernel_matches_tflite_micro(target, tmp_path):
    """The plane kernel of 3x3 stride-1 depthwise layers (dsp/depthwise_plane.h) in two chains: rows of 13, 11
    and 9 outputs (strips of 6 and shorter tails), channel counts that are not multiples of 4, same and valid
    padding; and rows of at most 6 outputs (one strip, the written-out plane copy) with padding on either side
    or none. Host (instructions emulated) and the emulated Cortex-M4 (the assembly) against TFLite Micro."""
    import keras
    from keras import layers

    rng = np.random.default_rng(12)
    for case, (shape, chain) in enumerate([((9, 13, 6), ["same", "valid", 8, "same", "valid"]),
                                           ((7, 5, 8), ["same", "valid", 12, "same"])]):
        keras.utils.set_random_seed(case)
        inp = keras.Input(shape)
        x = inp
        for step in chain:
            if isinstance(step, int):
                x = layers.Conv2D(step, 1, activation="relu")(x)
            else:
                x = layers.DepthwiseConv2D(3, padding=step, activation="relu")(x)
        out = layers.Dense(6)(layers.Flatten()(x))
        buf = convert_int8(keras.Model(inp, out), rng.normal(0, 1, (32, *shape)).astype(np.float32))
        path = tmp_path / f"plane{case}.tflite"
        path.write_bytes(buf)
        fw = build(path, target, tmp_path / f"b{case}", kernels="dsp")
        source = (tmp_path / f"b{case}" / "model.cc").read_text()
        planes = sum(1 for step in chain if isinstance(step, str))
        assert source.count("dsp::depthwise_plane_s8(") == planes, case
        assert (source.count("dsp::depthwise_fill<") == planes) == (case == 1)
        reference = StageInterpreter(buf)
        with firmware(target, fw.binary) as dev:
            for sample in rng.integers(-128, 128, (6, *shape)).astype(np.int8):
                assert np.array_equal(dev.infer(sample).output, reference(sample[None])[0].reshape(-1)), case


@pytest.mark.parametrize("target", ["host", "qemu-m4"])
def test_six_pixel_stream_matches_tflite_micro(target, tmp_path):
    """The six-pixel int8 GEMM stream (tinyexit/dsp_streams.h): pixel counts that are not multiples of 6 (the last
    pixels through the staging buffer), channels in several shift segments, inputs after a ReLU (zero point
    -128, the offset-128 gather) and not, 1x1 (pointwise gather) and 3x3 with padding (the padded copy), against
    TFLite Micro on the host and on the emulated Cortex-M4."""
    import re

    import keras
    from keras import layers

    keras.utils.set_random_seed(21)
    inp = keras.Input((7, 5, 8))
    x = layers.Conv2D(16, 1, activation="relu")(inp)
    x = layers.Conv2D(12, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(8, (2, 3), strides=2)(x)
    out = layers.Dense(5)(layers.Flatten()(x))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(21)
    for layer in model.layers[1:4]:  # channel scales over a wide range: several shifts per layer
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * rng.uniform(0.1, 4, kernel.shape[-1]), bias])
    buf = convert_int8(model, rng.normal(0, 1, (32, 7, 5, 8)).astype(np.float32))
    path = tmp_path / "six.tflite"
    path.write_bytes(buf)
    fw = build(path, target, tmp_path / "b", kernels="dsp")
    source = (tmp_path / "b" / "model.cc").read_text()
    assert source.count("dsp::conv_stream_s8(") == 3
    segments = [int(n) for n in re.findall(r"_segments, (\d+), \d+\};", source)]
    assert max(segments) >= 2, segments
    reference = StageInterpreter(buf)
    with firmware(target, fw.binary) as dev:
        for sample in rng.integers(-128, 128, (8, 7, 5, 8)).astype(np.int8):
            assert np.array_equal(dev.infer(sample).output, reference(sample[None])[0].reshape(-1))


@pytest.mark.parametrize("target", ["host", "qemu-m4"])
def test_depthwise_group_kernels_match_tflite_micro(target, tmp_path):
    """The depthwise layers the plane kernel does not take run four channels per load with int8 weights widened in
    registers (dsp/depthwise_stream.h for 3, 5 and 9 taps, depthwise_conv_s8.cc otherwise): stride 2, 5x1, 1x3,
    2x2, a dilated 3x3, and a 3x3 whose requantization shifts left, against TFLite Micro on the host and on the
    emulated Cortex-M4."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(31)
    inp = keras.Input((11, 10, 8))
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(inp)
    x = layers.DepthwiseConv2D((5, 1), padding="same")(x)
    x = layers.DepthwiseConv2D((1, 3), padding="same", activation="relu")(x)
    x = layers.DepthwiseConv2D(2)(x)
    x = layers.DepthwiseConv2D(3, padding="same", dilation_rate=2)(x)
    out = layers.Dense(5)(layers.Flatten()(x))
    rng = np.random.default_rng(31)
    buf = convert_int8(keras.Model(inp, out), rng.normal(0, 1, (32, 11, 10, 8)).astype(np.float32))
    path = tmp_path / "groups.tflite"
    path.write_bytes(buf)
    fw = build(path, target, tmp_path / "b", kernels="dsp")
    source = (tmp_path / "b" / "model.cc").read_text()
    assert source.count("dsp::depthwise_conv_s8(") == 5 and "_filter8[" in source and "_stream[" in source
    reference = StageInterpreter(buf)
    with firmware(target, fw.binary) as dev:
        for sample in rng.integers(-128, 128, (8, 11, 10, 8)).astype(np.int8):
            assert np.array_equal(dev.infer(sample).output, reference(sample[None])[0].reshape(-1))
    # a 3x3 filter whose weights cancel on smooth inputs: outputs far narrower than the products, so the
    # requantization shifts left (fast_mode 2) and the layer takes the written-out 9-tap loop of
    # depthwise_conv_s8.cc
    inp = keras.Input((6, 6, 8))
    depthwise = layers.DepthwiseConv2D(3, use_bias=False)
    model = keras.Model(inp, layers.Dense(4)(layers.Flatten()(depthwise(inp))))
    kernel = np.array([[1, -1, 1], [-1, 1, -1], [1, -1, 0]], np.float32)[:, :, None, None]
    depthwise.set_weights([kernel * np.ones((1, 1, 8, 1), np.float32)])
    smooth = rng.normal(0, 1, (32, 1, 1, 8)) * np.ones((1, 6, 6, 1)) + rng.normal(0, 0.0005, (32, 6, 6, 8))
    buf = convert_int8(model, smooth.astype(np.float32))
    path.write_bytes(buf)
    fw = build(path, target, tmp_path / "left", kernels="dsp")
    source = (tmp_path / "left" / "model.cc").read_text()
    assert "dsp::depthwise_conv_s8(" in source and 2 in dsp_modes(source)
    reference = StageInterpreter(buf)
    with firmware(target, fw.binary) as dev:
        for level in rng.integers(-100, 100, (8, 1, 1, 8)):
            sample = np.clip(level + rng.integers(-2, 3, (6, 6, 8)), -128, 127).astype(np.int8)
            assert np.array_equal(dev.infer(sample).output, reference(sample[None])[0].reshape(-1))
