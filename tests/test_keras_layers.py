"""Every common Keras layer of a tiny CNN/MLP: a small model using it converts with TF's full-integer
converter, builds with `tinyexit sim` for the host and for qemu-m4, and gives outputs identical to TFLite
Micro's interpreter on random inputs. One test per layer, run as a user runs the commands."""

import numpy as np
import pytest

from tests.conftest import run_cli
from tinyexit.reference import StageInterpreter


def _layers():
    import keras
    from keras import layers

    def conv(c=4, k=3):
        return layers.Conv2D(c, k, padding="same")

    # name -> (input shape, function of the input tensor giving the output)
    return {
        "Conv1D": ((16, 3), lambda x: layers.Conv1D(5, 3, strides=2, activation="relu")(x)),
        "Conv2D": ((8, 8, 3), lambda x: layers.Conv2D(6, 3, strides=2, padding="same", activation="relu6")(x)),
        "DepthwiseConv2D": ((8, 8, 4), lambda x: layers.DepthwiseConv2D(3, padding="same")(x)),
        "SeparableConv2D": ((8, 8, 3), lambda x: layers.SeparableConv2D(5, 3, activation="relu")(x)),
        "SeparableConv1D": ((16, 4), lambda x: layers.SeparableConv1D(6, 3, padding="same")(x)),
        "Dense": ((12,), lambda x: layers.Dense(7, activation="relu")(x)),
        "Dense3D": ((5, 6), lambda x: layers.Dense(4)(x)),
        "Conv2DTranspose": ((4, 4, 3), lambda x: layers.Conv2DTranspose(4, 3, strides=2, padding="same")(x)),
        "MaxPooling1D": ((16, 3), lambda x: layers.MaxPooling1D(2)(layers.Conv1D(4, 1)(x))),
        "MaxPooling2D": ((8, 8, 3), lambda x: layers.MaxPooling2D(2)(conv()(x))),
        "AveragePooling1D": ((16, 3), lambda x: layers.AveragePooling1D(2)(layers.Conv1D(4, 1)(x))),
        "AveragePooling2D": ((8, 8, 3), lambda x: layers.AveragePooling2D(2)(conv()(x))),
        "GlobalAveragePooling1D": ((16, 3), lambda x: layers.GlobalAveragePooling1D()(layers.Conv1D(4, 3)(x))),
        "GlobalAveragePooling2D": ((8, 8, 3), lambda x: layers.GlobalAveragePooling2D()(conv()(x))),
        "GlobalMaxPooling1D": ((16, 3), lambda x: layers.GlobalMaxPooling1D()(layers.Conv1D(4, 3)(x))),
        "GlobalMaxPooling2D": ((8, 8, 3), lambda x: layers.GlobalMaxPooling2D()(conv()(x))),
        "BatchNormalization": ((8, 8, 3), lambda x: layers.BatchNormalization(
            beta_initializer="random_normal", gamma_initializer="random_uniform",
            moving_mean_initializer="random_normal", moving_variance_initializer="ones")(x)),
        "ReLU": ((8, 8, 3), lambda x: layers.ReLU()(x)),
        "ReLU6": ((8, 8, 3), lambda x: layers.ReLU(max_value=6.0)(x)),
        "LeakyReLU": ((8, 8, 3), lambda x: layers.LeakyReLU(negative_slope=0.2)(x)),
        "PReLU": ((8, 8, 3), lambda x: layers.PReLU(alpha_initializer=keras.initializers.RandomUniform(0, 0.5))(x)),
        "sigmoid": ((8, 8, 3), lambda x: layers.Activation("sigmoid")(x)),
        "tanh": ((8, 8, 3), lambda x: layers.Activation("tanh")(x)),
        "hard_swish": ((8, 8, 3), lambda x: layers.Activation("hard_swish")(x)),
        "softmax": ((10,), lambda x: layers.Softmax()(layers.Dense(6)(x))),
        "Add": ((8, 8, 3), lambda x: layers.Add()([conv()(x), conv()(x)])),
        "Multiply": ((8, 8, 3), lambda x: layers.Multiply()([conv()(x), conv()(x)])),
        "SqueezeExcite": ((8, 8, 4), lambda x: layers.Multiply()(
            [x, layers.Dense(4, activation="sigmoid")(layers.GlobalAveragePooling2D(keepdims=True)(x))])),
        "Subtract": ((8, 8, 3), lambda x: layers.Subtract()([conv()(x), conv()(x)])),
        "Maximum": ((8, 8, 3), lambda x: layers.Maximum()([conv()(x), conv()(x)])),
        "Minimum": ((8, 8, 3), lambda x: layers.Minimum()([conv()(x), conv()(x)])),
        "Concatenate": ((8, 8, 3), lambda x: layers.Concatenate(axis=-1)([conv(2)(x), conv(3)(x)])),
        "Concatenate_axis1": ((8, 8, 3), lambda x: layers.Concatenate(axis=1)([conv()(x), conv()(x)])),
        "Reshape": ((8, 8, 3), lambda x: layers.Reshape((16, 12))(conv(3)(x))),
        "Flatten": ((6, 6, 3), lambda x: layers.Dense(5)(layers.Flatten()(conv()(x)))),
        "Permute": ((6, 5, 3), lambda x: layers.Permute((3, 1, 2))(conv(2)(x))),
        "ZeroPadding1D": ((16, 3), lambda x: layers.ZeroPadding1D((1, 2))(layers.Conv1D(4, 1)(x))),
        "ZeroPadding2D": ((8, 8, 3), lambda x: layers.ZeroPadding2D(((1, 0), (2, 1)))(conv()(x))),
        "Cropping1D": ((16, 3), lambda x: layers.Cropping1D((2, 3))(layers.Conv1D(4, 1)(x))),
        "Cropping2D": ((8, 8, 3), lambda x: layers.Cropping2D(((1, 2), (0, 3)))(conv()(x))),
        "UpSampling1D": ((8, 3), lambda x: layers.UpSampling1D(2)(x)),
        "UpSampling2D": ((6, 6, 3), lambda x: layers.UpSampling2D(2)(x)),
    }


# Keras 3 lowers UpSampling to TILE, which TFLite Micro does not run (the firmware does), nor do LiteRT's
# reference kernels: LiteRT's default kernels are the reference there, on a model that only moves bytes (no
# arithmetic, where they round differently from TFLite Micro)
NOT_IN_TFLITE_MICRO = {"UpSampling1D", "UpSampling2D"}
# converted without fixing the batch size: Flatten's shape arithmetic stays in the graph
DYNAMIC_BATCH = {"Flatten_dynamic_batch": "Flatten"}
LAYERS = sorted(_layers()) + sorted(DYNAMIC_BATCH)


def _convert(name: str, tmp_path):
    import keras
    import tensorflow as tf

    shape, make = _layers()[DYNAMIC_BATCH.get(name, name)]
    keras.utils.set_random_seed(sum(map(ord, name)))
    inp = keras.Input(shape)
    model = keras.Model(inp, make(inp))
    rng = np.random.default_rng(0)
    calibration = rng.normal(0, 1.5, (32, *shape)).astype(np.float32)
    if name in DYNAMIC_BATCH:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        buf = converter.convert()
    else:
        from tinyexit.export import convert_int8

        buf = convert_int8(model, calibration)
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(buf)
    return path, shape


@pytest.mark.parametrize("name", LAYERS)
def test_keras_layer_builds_and_matches_tflite_micro(name, tmp_path):
    path, shape = _convert(name, tmp_path)
    reference = StageInterpreter(path.read_bytes(), "litert" if name in NOT_IN_TFLITE_MICRO else "tflm")
    x = np.random.default_rng(1).integers(-128, 128, (5, *shape)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    want = [reference(sample[None]) for sample in x]
    for target in ("host", "qemu-m4"):
        r = run_cli("sim", str(path), "--target", target, "--inputs", str(tmp_path / "x.npy"),
                    "--out", str(tmp_path / f"{target}.npz"), "--build-dir", str(tmp_path / target))
        assert r.returncode == 0, f"{name} on {target}: {r.stderr.strip().splitlines()[-1:]}"
        got = np.load(tmp_path / f"{target}.npz")
        for i in range(len(x)):
            assert np.array_equal(got["output_0"][i], want[i][0][0]), f"{name} on {target}, sample {i}"
