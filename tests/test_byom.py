"""Bring your own model: plain models with several inputs and outputs, early-exit models made elsewhere
(`tinyexit import`), and the compatibility report (`tinyexit check`), run as a user runs them."""

import json

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tinyexit.export import convert_int8
from tinyexit.reference import StageInterpreter


@pytest.fixture(scope="module")
def two_in_two_out(tmp_path_factory):
    """Two int8 inputs, two float32 outputs (the converter ends them in DEQUANTIZE)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    a, b = keras.Input((6, 6, 3)), keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(a)
    y = layers.Conv2D(4, 1)(b)
    s = layers.Add()([x, y])
    model = keras.Model([a, b], [layers.Dense(5)(layers.Flatten()(s)), layers.Conv2D(2, 1)(s)])
    rng = np.random.default_rng(0)
    calibration = [rng.normal(0, 1, (16, 6, 6, c)).astype(np.float32) for c in (3, 2)]
    path = tmp_path_factory.mktemp("multi") / "two_in_two_out.tflite"
    path.write_bytes(convert_int8(model, calibration, float_outputs=True))
    return path


@pytest.mark.parametrize("target", ["host", "qemu-m4"])
def test_several_inputs_and_outputs_through_sim(two_in_two_out, target, tmp_path):
    buf = two_in_two_out.read_bytes()
    reference = StageInterpreter(buf)
    rng = np.random.default_rng(1)
    xa = rng.integers(-128, 128, (6, 6, 6, 3)).astype(np.int8)
    xb = rng.integers(-128, 128, (6, 6, 6, 2)).astype(np.int8)
    np.save(tmp_path / "a.npy", xa)
    np.save(tmp_path / "b.npy", xb)
    r = run_cli("sim", str(two_in_two_out), "--target", target, "--inputs", str(tmp_path / "a.npy"),
                str(tmp_path / "b.npy"), "--out", str(tmp_path / "r.npz"), "--build-dir", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    result = np.load(tmp_path / "r.npz")
    for i in range(len(xa)):
        want = reference([xa[i:i + 1], xb[i:i + 1]])
        assert len(want) == 2
        for j, w in enumerate(want):
            got = result[f"output_{j}"][i]
            assert got.dtype == np.float32 == w.dtype
            assert np.array_equal(got, w[0]), f"sample {i} output {j}"
    # one input missing: one error line
    r = run_cli("sim", str(two_in_two_out), "--target", target, "--inputs", str(tmp_path / "a.npy"),
                "--build-dir", str(tmp_path / "b"))
    assert_one_line_error(r, "input")


def _early_exit_keras(har, path):
    """A plain Keras model with an early exit as a second output (BranchyNet style), trained briefly on real
    HAR windows; the final output ends in a softmax, as users' models often do."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input(har.train.x.shape[1:])
    x = layers.Conv2D(8, (5, 1), strides=(2, 1), padding="same", activation="relu")(inp)
    x = layers.Conv2D(12, (5, 1), strides=(2, 1), padding="same", activation="relu")(x)
    early = layers.Dense(6, name="early")(layers.GlobalAveragePooling2D()(x))
    y = layers.DepthwiseConv2D((5, 1), padding="same", activation="relu")(x)
    y = layers.Conv2D(24, 1, activation="relu")(y)
    final = layers.Dense(6, activation="softmax", name="final")(layers.GlobalAveragePooling2D()(y))
    model = keras.Model(inp, [early, final])
    model.compile("adam", [keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           keras.losses.SparseCategoricalCrossentropy()])
    train = har.train.subset(3000)
    model.fit(train.x, [train.y, train.y], epochs=3, batch_size=64, verbose=0)
    model.save(path)


def test_import_calibrate_build_sim_stops_at_the_exits_on_qemu_m4(har, tmp_path):
    from tinyexit import manifest as mf
    from tinyexit.reference import all_exit_logits, decide, quantize_input

    _early_exit_keras(har, tmp_path / "ee.keras")
    data = tmp_path / "data"
    data.mkdir()
    for name, split in (("train", har.train.subset(300)), ("val", har.val.subset(400, 1)),
                        ("test", har.test.subset(60, 2))):
        np.save(data / f"{name}_x.npy", split.x)
        np.save(data / f"{name}_y.npy", split.y)
    export = tmp_path / "export"
    r = run_cli("import", str(tmp_path / "ee.keras"), "--exits", "early", "--data", str(data), "--out", str(export))
    assert r.returncode == 0, r.stderr
    m = mf.read(export)
    assert len(m["stages"]) == 2 and [e["final"] for e in m["exits"]] == [False, True]
    r = run_cli("calibrate", str(export), "--budget-pp", "3")
    assert r.returncode == 0, r.stderr
    m = mf.read(export)
    assert m["exits"][0]["policy"]["threshold_q15"] < 32768
    x = quantize_input(m, np.load(data / "test_x.npy"))
    np.save(tmp_path / "x.npy", x)
    r = run_cli("build", str(export), "--target", "qemu-m4", "--out", str(tmp_path / "fw"))
    assert r.returncode == 0, r.stderr
    r = run_cli("sim", str(export), "--target", "qemu-m4", "--inputs", str(tmp_path / "x.npy"), "--labels",
                str(data / "test_y.npy"), "--out", str(tmp_path / "r.npz"), "--json", str(tmp_path / "s.json"),
                "--build-dir", str(tmp_path / "fw"))
    assert r.returncode == 0, r.stderr
    result = np.load(tmp_path / "r.npz")
    expected = decide(m, all_exit_logits(m, x))
    assert np.array_equal(result["exit"], expected.exit)
    assert np.array_equal(result["pred"], expected.pred)
    assert (result["exit"] == 0).any(), "no sample left at the early exit"
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["exit_histogram"] == np.bincount(expected.exit, minlength=2).tolist()


@pytest.mark.parametrize("model", ["mlperf_kws_ref_model_int8.tflite", "mlperf_kws_ref_model_float32.tflite",
                                   "mlperf_vww_96_float.h5"])
def test_check_every_shared_model(datasets, model, tmp_path):
    r = run_cli("check", str(datasets / "models" / model), "--json", str(tmp_path / "check.json"))
    report = json.loads((tmp_path / "check.json").read_text())
    assert len(report["operators"]) >= 13 and report["macs"] > 2_000_000
    if "float32.tflite" in model:  # a float .tflite: every operator named, none runnable until quantized
        assert r.returncode == 1 and report["unsupported"] == len(report["operators"])
        assert "float32" in r.stdout
    else:
        assert r.returncode == 0, r.stdout + r.stderr
        assert report["unsupported"] == 0 and report["arena_bytes"] > 0 and report["weight_flash_bytes"] > 20_000
        assert any("(dsp)" in o["kernel"] for o in report["operators"])


def test_check_and_build_name_an_unsupported_operator(tmp_path):
    import keras
    from keras import layers

    inp = keras.Input((8, 4))
    out = layers.Activation("gelu", name="smooth_act")(layers.Dense(4)(inp))  # int8 GELU: not in TFLite Micro
    model = keras.Model(inp, out)
    path = tmp_path / "gelu.tflite"
    path.write_bytes(convert_int8(model, np.random.default_rng(0).normal(0, 1, (8, 8, 4)).astype(np.float32)))
    model.save(tmp_path / "gelu.keras")
    r = run_cli("check", str(path))
    assert r.returncode == 1 and "GELU" in r.stdout and "unsupported" in r.stdout
    r = run_cli("check", str(tmp_path / "gelu.keras"))
    assert r.returncode == 1 and "[Keras: smooth_act]" in r.stdout, r.stdout + r.stderr
    r = run_cli("build", str(path), "--target", "host", "--out", str(tmp_path / "b"))
    assert_one_line_error(r, "GELU", "not supported")
