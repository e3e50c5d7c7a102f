"""Convolutions over their input's buffer. In place: the planner gives a 1x1 CONV_2D (stride 1, no padding)
and a DEPTHWISE_CONV_2D with depth multiplier 1 their input's buffer when nothing reads the input later, and one
plan serves the portable kernels (`*_in_place_s8`) and the DSP kernels (blocks of pixels gathered before their
outputs are written, backward when the output is wider; the plane kernel filling a strip's planes ahead).
Overlapped: other convolutions, whose kernels write pixels in order, start their output a few bytes before
their input. Bit-exact with TFLite Micro on the host (portable and DSP kernels) and on the emulated Cortex-M4."""

from types import SimpleNamespace

import numpy as np
import pytest

from tinyexit.codegen import layout, load
from tinyexit.codegen.ops.weights import ConvOp
from tinyexit.export import convert_int8
from tinyexit.firmware_build import build
from tinyexit.harness import firmware
from tinyexit.reference import StageInterpreter


def _chain(shape, steps, seed):
    """A sequential model: ("pw", channels, activation) 1x1 convolutions, ("conv", (filters, kernel, stride,
    padding), activation) others, ("dw", kwargs, activation) depthwise layers, then a Dense head."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape)
    x = inp
    for kind, arg, act in steps:
        if kind == "pw":
            x = layers.Conv2D(arg, 1, activation=act)(x)
        elif kind == "conv":
            filters, kernel, stride, padding = arg
            x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, activation=act)(x)
        else:
            x = layers.DepthwiseConv2D(3, activation=act, **arg)(x)
    out = layers.Dense(6)(layers.Flatten()(x))
    rng = np.random.default_rng(seed)
    return convert_int8(keras.Model(inp, out), rng.normal(0, 1, (32, *shape)).astype(np.float32))


def test_overlap_shift_never_writes_over_bytes_still_to_read():
    """Brute force on random geometries: with the output overlap_shift() bytes before the input, the bytes a
    raster kernel has written up to each output pixel never meet a byte that pixel or a later one reads."""
    rng = np.random.default_rng(8)
    for _ in range(200):
        n, in_h, in_w = int(rng.integers(1, 3)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
        in_c, out_c = int(rng.integers(1, 9)), int(rng.integers(1, 17))
        kh, kw = int(rng.integers(1, min(in_h, 4) + 1)), int(rng.integers(1, min(in_w, 4) + 1))
        sh, sw, dh, dw = (int(v) for v in rng.integers(1, 3, 4))
        ph, pw = int(rng.integers(0, kh)), int(rng.integers(0, kw))
        out_h, out_w = (in_h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (in_w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if out_h < 1 or out_w < 1:
            continue
        g = dict(input=(n, in_h, in_w, in_c), filter=(out_c, kh, kw, in_c), output=(n, out_h, out_w, out_c),
                 stride=(sh, sw), dilation=(dh, dw), pad=(ph, pw))
        shift = ConvOp.overlap_shift(SimpleNamespace(geometry=lambda: g))
        assert shift >= 0 and shift % 8 == 0
        pixels = [(b, y, x) for b in range(n) for y in range(out_h) for x in range(out_w)]
        reads = []  # the lowest input byte each output pixel reads (None: all its taps are padding)
        for b, y, x in pixels:
            taps = [((b * in_h + y * sh - ph + dh * i) * in_w + x * sw - pw + dw * j) * in_c
                    for i in range(kh) for j in range(kw)
                    if 0 <= y * sh - ph + dh * i < in_h and 0 <= x * sw - pw + dw * j < in_w]
            reads.append(min(taps) if taps else None)
        for p in range(len(pixels)):
            written_end = -shift + (p + 1) * out_c  # from the input's start
            later = [r for r in reads[p:] if r is not None]
            assert not later or written_end <= min(later), (g, shift, p)


# (input shape, layers, which of the layers run in place)
CASES = {
    # 35 pixels (not a multiple of 6 or 2: short blocks, first when backward); channels 6 (no DSP depthwise:
    # the portable kernel in both builds), 6 -> 12 and 8 -> 16 wider (backward; the six-pixel stream and, with
    # relu6's clamp, the two-pixel stream), 12 -> 8 narrower; a 3x3 plane layer with one strip per row; a
    # stride-2 DSP depthwise (read pixel by pixel: overlapped) and depth multiplier 2 (overlapped)
    "narrow": ((7, 5, 6), [("dw", {"padding": "same"}, "relu"), ("pw", 12, "relu"), ("dw", {"padding": "same"}, "relu"),
                           ("pw", 8, "relu6"), ("pw", 16, "relu6"), ("dw", {"padding": "same", "strides": 2}, None),
                           ("dw", {"padding": "valid", "depth_multiplier": 2}, None)],
               [True, True, True, True, True, False, False]),
    # rows of 8 outputs (plane strips: the next strip's planes filled ahead); portable-only depthwise (6 channels) at stride 2,
    # valid padding and dilated, whose outputs are smaller than or as large as their inputs; 1x1 at equal width
    "wide": ((9, 8, 8), [("dw", {"padding": "same"}, "relu"), ("pw", 6, None), ("dw", {"padding": "same", "strides": 2}, "relu"),
                         ("dw", {"padding": "valid"}, None), ("pw", 6, "relu"), ("dw", {"padding": "same", "dilation_rate": 2}, None)],
             [True, True, True, True, True, True]),
    # overlapped convolutions (the six-pixel stream, the padded copy, relu6's two-pixel stream), the first
    # over the model input
    "convs": ((8, 7, 3), [("conv", (8, 3, 2, "same"), "relu"), ("conv", (8, 3, 1, "same"), "relu6"),
                          ("conv", (6, (2, 3), 1, "valid"), None), ("conv", (4, 1, 2, "valid"), "relu")],
              [False, False, False, False]),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The CASES as .tflite files, and "narrow" with 4-bit filters (the packed kernels, `*_packed_in_place_s8`)."""
    from tinyexit.qat import narrow_weights
    from tinyexit.tflite_graph import WEIGHT_INPUT, Graph

    folder = tmp_path_factory.mktemp("inplace")
    paths = {}
    for seed, (name, (shape, steps, _)) in enumerate(CASES.items()):
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(_chain(shape, steps, seed))
    buf = paths["narrow"].read_bytes()
    g = Graph(buf)
    paths["packed"] = folder / "packed.tflite"
    paths["packed"].write_bytes(narrow_weights(buf, {g.weight_tensor(op).name: 4 for op in g.ops if op.op in WEIGHT_INPUT}))
    return paths


@pytest.mark.parametrize("name", list(CASES))
def test_planner_runs_convolutions_in_place_where_both_kernels_can(models, name):
    shape, steps, expected = CASES[name]
    model = load(models[name])
    lay = layout(model)
    convs = [o for o in model.stages[0].ops if o.op.op in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert [o.in_place for o in convs] == expected
    for o in convs:  # a chain: each input is read by its convolution alone, which shares its buffer
        in_key, out_key = (lay.key_of[(0, t)] for t in (o.activations[0], o.outputs[0]))
        assert lay.buffers[in_key] is lay.buffers[out_key]
        assert lay.buffers[in_key].size >= max(o.t(o.activations[0]).nbytes, o.t(o.outputs[0]).nbytes)
        if o.in_place:  # the output on the input's bytes; the kernel's scratch is in the plan too
            assert lay.address(out_key) == lay.address(in_key)
            assert o.scratch_bytes >= o.in_place_scratch_bytes > 0
        else:  # the output starts overlap_shift() bytes before the input
            assert o.raster and lay.address(out_key) == lay.address(in_key) - o.overlap_shift()
    # parts of different buffers live at the same step never share bytes
    unique = list({id(b): b for b in lay.buffers.values()}.values())
    parts = [(i, f, l, b.offset + r, size) for i, b in enumerate(unique) for f, l, r, size in b.segments()]
    for a, (i, f1, l1, o1, s1) in enumerate(parts):
        for j, f2, l2, o2, s2 in parts[a + 1:]:
            if i != j and f1 <= l2 and f2 <= l1:
                assert o1 + s1 <= o2 or o2 + s2 <= o1


@pytest.mark.parametrize("target,kernels", [("host", "portable"), ("host", "dsp"), ("qemu-m4", "dsp")])
def test_in_place_convolutions_match_tflite_micro(models, target, kernels, tmp_path):
    rng = np.random.default_rng(5)
    for name, path in models.items():
        shape = CASES["narrow" if name == "packed" else name][0]
        fw = build(path, target, tmp_path / name, kernels=kernels)
        source = (tmp_path / name / "model.cc").read_text()
        in_place = sum(CASES["narrow" if name == "packed" else name][2])
        assert source.count("_in_place_s8(") == in_place or name == "packed" and source.count("_packed_in_place_s8(") > 0
        reference = StageInterpreter(path.read_bytes())
        with firmware(target, fw.binary) as dev:
            for sample in rng.integers(-128, 128, (5, *shape)).astype(np.int8):
                assert np.array_equal(dev.infer(sample).output, reference(sample[None])[0].reshape(-1)), name
