"""The memory report (build.json) and the planner's shared buffers: reshapes as aliases of their input,
in-place elementwise operators and a convolution overlapping its input, still bit-exact with TFLite Micro."""

import json
import numpy as np
import pytest

from tinyexit.codegen import layout, load
from tinyexit.codegen.planner import Buffer, plan
from tinyexit.export import convert_int8
from tinyexit.firmware_build import build
from tinyexit.harness import firmware
from tinyexit.reference import StageInterpreter

KEYS = ("arena_bytes", "stack_bytes", "flash_bytes", "weight_flash_bytes", "int8_weight_bytes", "ram_bytes")


def test_planner_keeps_the_smallest_order_and_never_overlaps_live_buffers():
    rng = np.random.default_rng(3)
    buffers = []
    for _ in range(40):
        first = int(rng.integers(-1, 20))
        buffers.append(Buffer(int(rng.integers(1, 500)), first, first + int(rng.integers(0, 6))))
    arena = plan(buffers)
    for i, a in enumerate(buffers):
        assert 0 <= a.offset and a.offset + a.size <= arena
        for b in buffers[i + 1:]:
            if a.first <= b.last and b.first <= a.last:
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
    peak = max(sum(b.size for b in buffers if b.first <= s <= b.last) for s in range(-1, 26))
    assert peak <= arena


@pytest.fixture(scope="module")
def chained(tmp_path_factory):
    """conv -> LOGISTIC -> RESHAPE -> TANH -> MUL(tanh, reshape) -> ADD(product, reshape of conv) + RELU: the
    reshapes alias, the logistic may not run in place (the conv output is read later), nor the tanh (its
    input is read by the MUL), the MUL and ADD may."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(7)
    inp = keras.Input((6, 5, 8))
    a = layers.Conv2D(8, 3, padding="same")(inp)
    b = layers.Activation("sigmoid")(a)
    c = layers.Reshape((30, 8))(b)
    d = layers.Activation("tanh")(c)
    e = layers.Multiply()([d, c])
    f = layers.ReLU()(layers.Add()([e, layers.Reshape((30, 8))(a)]))
    model = keras.Model(inp, f)
    rng = np.random.default_rng(1)
    calibration = rng.normal(0, 2, (64, 6, 5, 8)).astype(np.float32)
    path = tmp_path_factory.mktemp("chain") / "chain.tflite"
    path.write_bytes(convert_int8(model, calibration))
    return path


def test_in_place_chain_shares_buffers_and_stays_bit_exact(chained, tmp_path):
    model = load(chained)
    lay = layout(model)
    activations = [b for key, b in lay.buffers.items() if key[0] != "scratch"]
    assert len(activations) == 8  # input, conv, logistic, 2 reshapes, tanh, product, sum
    # input + conv (+ reshape: the conv, its input's last reader, writes its output a few bytes before the
    # input), logistic (+ reshape), tanh (+ product, sum)
    assert len({id(b) for b in activations}) == 3
    conv = model.stages[0].ops[0]
    inp, out = (lay.key_of[(0, t)] for t in (conv.activations[0], conv.outputs[0]))
    assert lay.address(out) == lay.address(inp) - conv.overlap_shift()
    conv_scratch = max(b.size for key, b in lay.buffers.items() if key[0] == "scratch")
    assert lay.arena <= conv_scratch + 2 * 240 + 8  # the conv step is the peak: three 240-byte buffers without sharing
    fw = build(chained, "host", tmp_path / "host", kernels="portable")
    assert "reshape: the output shares its input's bytes" in (tmp_path / "host" / "model.cc").read_text()
    ref = StageInterpreter(chained.read_bytes())
    rng = np.random.default_rng(2)
    with firmware("host", fw.binary) as dev:
        for _ in range(6):
            x = rng.integers(-128, 128, (6, 5, 8), dtype=np.int8)
            assert np.array_equal(dev.infer(x).output, ref(x[None])[0].reshape(-1))
    # the host build's memory report: no stack measured there
    report = json.loads((tmp_path / "host" / "build.json").read_text())
    assert report == fw.memory and all(k in report for k in KEYS)
    assert report["arena_bytes"] == fw.arena_bytes == lay.arena
    assert report["stack_bytes"] is None and "note" in report
    assert report["flash_bytes"] > report["weight_flash_bytes"] > 0
    assert report["int8_weight_bytes"] >= report["weight_flash_bytes"]
    assert report["ram_bytes"] >= report["arena_bytes"]


def test_sim_on_qemu_m4_measures_the_stack(chained, tmp_path):
    from tinyexit.sim import simulate

    x = np.random.default_rng(4).integers(-128, 128, (3, 6, 5, 8), dtype=np.int8)
    result, summary = simulate(chained, "qemu-m4", x, None, tmp_path, progress=False)
    report = json.loads((tmp_path / "build.json").read_text())
    assert all(k in report for k in KEYS)
    assert 0 < report["stack_bytes"] < report["stack_reserved_bytes"]
    assert summary["stack_bytes"] == report["stack_bytes"]
    assert report["ram_bytes"] == report["data_bytes"] + report["bss_bytes"] + report["stack_bytes"]
    assert report["flash_bytes"] > report["weight_flash_bytes"] > 0
    ref = StageInterpreter(chained.read_bytes())
    assert np.array_equal(result["output"], np.stack([ref(s[None])[0].reshape(-1) for s in x]))  # DSP kernels
