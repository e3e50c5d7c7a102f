"""In-place convolutions: the planner gives a 1x1 CONV_2D (stride 1, no padding) and a DEPTHWISE_CONV_2D with
depth multiplier 1 their input's buffer when nothing reads the input later, and one plan serves the portable
kernels (`*_in_place_s8`) and the DSP kernels (blocks of pixels gathered before their outputs are written,
backward when the output is wider; the plane kernel with one strip per row). Bit-exact with TFLite Micro on the
host (portable and DSP kernels) and on the emulated Cortex-M4 (DSP kernels)."""

import numpy as np
import pytest

from tinyexit.codegen import layout, load
from tinyexit.export import convert_int8
from tinyexit.firmware_build import build
from tinyexit.harness import firmware
from tinyexit.reference import StageInterpreter


def _chain(shape, steps, seed):
    """A sequential model: ("pw", channels, activation) 1x1 convolutions, ("dw", kwargs) depthwise layers,
    then a Dense head."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape)
    x = inp
    for kind, arg, act in steps:
        if kind == "pw":
            x = layers.Conv2D(arg, 1, activation=act)(x)
        else:
            x = layers.DepthwiseConv2D(3, activation=act, **arg)(x)
    out = layers.Dense(6)(layers.Flatten()(x))
    rng = np.random.default_rng(seed)
    return convert_int8(keras.Model(inp, out), rng.normal(0, 1, (32, *shape)).astype(np.float32))


# (input shape, layers, which of the layers run in place)
CASES = {
    # 35 pixels (not a multiple of 6 or 2: short blocks, first when backward); channels 6 (no DSP depthwise:
    # the portable kernel in both builds), 6 -> 12 and 8 -> 16 wider (backward; the six-pixel stream and, with
    # relu6's clamp, the two-pixel stream), 12 -> 8 narrower; a 3x3 plane layer with one strip per row; a
    # stride-2 DSP depthwise (read pixel by pixel: not in place) and depth multiplier 2 (not in place)
    "narrow": ((7, 5, 6), [("dw", {"padding": "same"}, "relu"), ("pw", 12, "relu"), ("dw", {"padding": "same"}, "relu"),
                           ("pw", 8, "relu6"), ("pw", 16, "relu6"), ("dw", {"padding": "same", "strides": 2}, None),
                           ("dw", {"padding": "valid", "depth_multiplier": 2}, None)],
               [True, True, True, True, True, False, False]),
    # rows of 8 outputs (plane strips overlap: not in place); portable-only depthwise (6 channels) at stride 2,
    # valid padding and dilated, whose outputs are smaller than or as large as their inputs; 1x1 at equal width
    "wide": ((9, 8, 8), [("dw", {"padding": "same"}, "relu"), ("pw", 6, None), ("dw", {"padding": "same", "strides": 2}, "relu"),
                         ("dw", {"padding": "valid"}, None), ("pw", 6, "relu"), ("dw", {"padding": "same", "dilation_rate": 2}, None)],
             [False, True, True, True, True, True]),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inplace")
    paths = {}
    for seed, (name, (shape, steps, _)) in enumerate(CASES.items()):
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(_chain(shape, steps, seed))
    return paths


@pytest.mark.parametrize("name", list(CASES))
def test_planner_runs_convolutions_in_place_where_both_kernels_can(models, name):
    shape, steps, expected = CASES[name]
    model = load(models[name])
    lay = layout(model)
    convs = [o for o in model.stages[0].ops if o.op.op in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert [o.in_place for o in convs] == expected
    for o in convs:
        inp, out = (lay.buffers[lay.key_of[(0, t)]] for t in (o.activations[0], o.outputs[0]))
        assert (inp is out) == o.in_place
        if o.in_place:  # the shared buffer holds the larger of the two; the kernel's scratch is there too
            assert inp.size >= max(o.t(o.activations[0]).nbytes, o.t(o.outputs[0]).nbytes)
            assert o.scratch_bytes >= o.in_place_scratch_bytes > 0
    # no two buffers live at the same step overlap (in-place outputs are their inputs' buffers)
    live = list({id(b): b for b in lay.buffers.values()}.values())
    for i, a in enumerate(live):
        for b in live[i + 1:]:
            if a.first <= b.last and b.first <= a.last:
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset


@pytest.mark.parametrize("target,kernels", [("host", "portable"), ("host", "dsp"), ("qemu-m4", "dsp")])
def test_in_place_convolutions_match_tflite_micro(models, target, kernels, tmp_path):
    rng = np.random.default_rng(5)
    for name, path in models.items():
        shape = CASES[name][0]
        fw = build(path, target, tmp_path / name, kernels=kernels)
        source = (tmp_path / name / "model.cc").read_text()
        assert "conv_in_place_s8(" in source and "depthwise_conv_in_place_s8(" in source
        reference = StageInterpreter(path.read_bytes())
        with firmware(target, fw.binary) as dev:
            for sample in rng.integers(-128, 128, (5, *shape)).astype(np.int8):
                assert np.array_equal(dev.infer(sample).output, reference(sample[None])[0].reshape(-1)), name
