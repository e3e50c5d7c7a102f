"""Retrofitting exits onto pretrained Keras CNNs of two different architectures."""

import json

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tinyexit import retrofit


@pytest.fixture(scope="module")
def mobilenet_path(datasets):
    return datasets / "models" / "mlperf_vww_96_float.h5"


def test_finds_the_separable_blocks_of_mobilenet(mobilenet_path):
    model = retrofit.load_pretrained(mobilenet_path)
    blocks = retrofit.separable_block_outputs(model)
    assert len(blocks) == 13  # MobileNetV1 has 13 depthwise-separable blocks
    assert retrofit.choose_cuts(model, None) == [blocks[2]]
    assert model.get_layer(blocks[2]).output.shape[1:] == (24, 24, 32)


def _tiny_resnet(path):
    """A small residual CNN (ADD joins, no separable blocks): a second architecture to retrofit."""
    import keras
    from keras import layers

    inp = keras.Input((96, 96, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    for i, width in enumerate((8, 16)):
        y = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"res{i}_a")(x)
        y = layers.Conv2D(width, 3, padding="same", name=f"res{i}_b")(y)
        if x.shape[-1] != width:
            x = layers.Conv2D(width, 1, name=f"res{i}_skip")(x)
        x = layers.ReLU(name=f"res{i}_out")(layers.Add(name=f"res{i}_add")([x, y]))
        x = layers.MaxPooling2D(2, name=f"res{i}_pool")(x)
    x = layers.Flatten()(layers.AveragePooling2D(x.shape[1:3])(x))  # MEAN would requantize in float
    out = layers.Dense(2)(x)
    keras.utils.set_random_seed(0)
    model = keras.Model(inp, out)
    model.save(path)
    return path


@pytest.mark.slow
def test_retrofit_a_residual_network_from_the_command_line(tmp_path, datasets):
    path = _tiny_resnet(tmp_path / "resnet.keras")
    r = run_cli("retrofit", str(path), "--task", "vww", "--data", str(datasets / "vww" / "mlperf_vww01.tar.xz"),
                "--after", "res0_out", "--epochs", "1", "--agreement-samples", "20", "--firmware-samples", "10",
                "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["cuts"] == ["res0_out"] and report["n_test"] == 300
    assert 0 <= report["int8_pretrained_accuracy"] <= 1 and 0 < report["mac_ratio"] < 1.5
    manifest = json.loads((tmp_path / "out" / "export" / "manifest.json").read_text())
    assert len(manifest["stages"]) == 2
    ops = {l["op"] for l in manifest["layers"]}
    assert "ADD" in ops and "MAX_POOL_2D" in ops
    assert report["firmware_mismatches_vs_tflm"] == 0 and report["firmware_samples"] == 10


@pytest.mark.slow
def test_retrofit_heads_learn_the_pretrained_answers_and_leave_its_weights(mobilenet_path):
    from tinyexit.data import load
    from tinyexit.train import predict_logits

    ds = load("vww")
    pretrained = retrofit.load_pretrained(mobilenet_path)
    before = [w.copy() for w in pretrained.get_weights()]
    cut = retrofit.separable_block_outputs(pretrained)[7]  # block 8, where the demo's exit goes
    model, spec = retrofit.attach_exits(pretrained, [cut], "vww", ds.classes, ds.preprocessing)
    model = retrofit.train_heads(model, spec, ds, epochs=2, views=4)
    after = pretrained.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    exit_logits, final = predict_logits(model, ds.val.x)
    assert np.allclose(final, pretrained.predict(ds.val.x, verbose=0), atol=1e-5)
    # distilled on 4 views of the 400 training images, the head answers as the final classifier does on
    # most held-out images (measured 86%; an untrained head agrees on about half)
    assert (exit_logits.argmax(1) == final.argmax(1)).mean() >= 0.8


def test_vww_augmentation_moves_the_image_but_keeps_its_range(datasets):
    from tinyexit.data import load

    ds = load("vww")
    rng = np.random.default_rng(0)
    views = ds.train.augment(np.arange(8), rng)
    assert views.shape == ds.train.x[:8].shape and views.dtype == np.float32
    assert views.min() >= 0.0 and views.max() <= 1.0
    assert not np.allclose(views, ds.train.x[:8], atol=0.05)
    again = ds.train.augment(np.arange(8), np.random.default_rng(0))
    assert np.array_equal(views, again)  # seeded: runs repeat


def test_bad_pretrained_inputs_give_one_clear_error(tmp_path, mobilenet_path, datasets):
    assert_one_line_error(run_cli("retrofit", str(tmp_path / "none.h5"), "--task", "vww"), "pretrained model not found")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    assert_one_line_error(run_cli("retrofit", str(tmp_path / "bad.h5"), "--task", "vww"), "cannot load Keras model")
    assert_one_line_error(run_cli("retrofit", str(mobilenet_path), "--task", "vww", "--after", "nope"),
                          "no layer named 'nope'")
