"""Retrofit early exits onto a pretrained Keras CNN: freeze it, attach T-RECX heads at chosen layers, train
only the heads. Works on any Keras functional CNN whose chosen layers output (N, H, W, C) features."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyexit.data import Dataset
from tinyexit.errors import TinyexitError
from tinyexit.models import ModelSpec, exit_head


def load_pretrained(path: str | Path):
    """A Keras model from `.keras` or legacy `.h5` (TF 2.x era files included)."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise TinyexitError(f"pretrained model not found: {path}")

    class LegacyDepthwiseConv2D(keras.layers.DepthwiseConv2D):
        """TF 2.x HDF5 files store `groups` for depthwise layers, which Keras 3 rejects."""

        def __init__(self, *args, groups=None, **kwargs):
            super().__init__(*args, **kwargs)

    try:
        return keras.models.load_model(path, compile=False,
                                       custom_objects={"DepthwiseConv2D": LegacyDepthwiseConv2D})
    except Exception as err:  # Keras raises many types for unreadable files
        raise TinyexitError(f"{path}: cannot load Keras model ({type(err).__name__}: {str(err)[:200]})") from None


def separable_block_outputs(model) -> list[str]:
    """Names of the layers ending each depthwise-separable block (depthwise conv, then 1x1 conv, then any
    batch norm / activation layers), in network order."""
    import keras

    names, seen_depthwise, pending = [], False, None
    passthrough = (keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.ReLU)
    for layer in model.layers:
        if pending is not None and isinstance(layer, passthrough):
            pending = layer.name
            continue
        if pending is not None:
            names.append(pending)
            pending = None
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            seen_depthwise = True
        elif isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1) and seen_depthwise:
            pending, seen_depthwise = layer.name, False
    if pending is not None:
        names.append(pending)
    return names


def choose_cuts(model, after: list[str] | None, default_block: int = 3) -> list[str]:
    """`after` given: check the names; else the end of the `default_block`-th separable block (T-RECX)."""
    if after:
        names = {l.name for l in model.layers}
        for a in after:
            if a not in names:
                raise TinyexitError(f"no layer named '{a}' in the pretrained model")
            if len(model.get_layer(a).output.shape) != 4:
                raise TinyexitError(f"layer '{a}' outputs {tuple(model.get_layer(a).output.shape)}; an exit "
                                    f"needs (N, H, W, C) features")
        return list(after)
    blocks = separable_block_outputs(model)
    if len(blocks) < default_block:
        raise TinyexitError(f"the model has {len(blocks)} depthwise-separable blocks; give --after LAYER")
    return [blocks[default_block - 1]]


def attach_exits(pretrained, cuts: list[str], task: str, classes: list[str], preprocessing: dict,
                 exit_width: int = 32, exit_kernel=(3, 3)):
    """(model with outputs [exit0, ..., final], spec). The pretrained layers are frozen."""
    import keras
    from keras import layers

    for layer in pretrained.layers:
        layer.trainable = False
    spec = ModelSpec(task, list(classes), tuple(pretrained.inputs[0].shape[1:]), blocks=[], exits_after=[],
                     exit_width=exit_width, exit_kernel=tuple(exit_kernel), early_view_assist=False,
                     dropout=0.0, input_noise=0.0, preprocessing=preprocessing,
                     cuts=[[cut, f"exit{j}"] for j, cut in enumerate(cuts)])
    heads = [exit_head(pretrained.get_layer(cut).output, layers, spec, j) for j, cut in enumerate(cuts)]
    final = layers.Identity(name="final")(pretrained.outputs[0])
    n_out = pretrained.outputs[0].shape[-1]
    if n_out != len(classes):
        raise TinyexitError(f"the pretrained model has {n_out} outputs; the task has {len(classes)} classes")
    return keras.Model(pretrained.inputs, heads + [final], name=f"{task}_retrofit"), spec


HEAD_EPOCHS = 4  # passes over the augmented views (measured on VWW: 3 and 8 do as well as 30)
HEAD_VIEWS = 24  # augmented copies of each training image


def train_heads(model, spec, data: Dataset, epochs: int = HEAD_EPOCHS, views: int = HEAD_VIEWS, seed: int = 0,
                temperature: float = 2.0, verbose: int = 0):
    """Train the exit heads of `model` (attach_exits) on the frozen backbone's features of `views` augmented
    copies of the training split, one head at a time (the backbone runs once per image, not once per step).
    Each head learns the pretrained model's own answers on the same image (distillation, temperature 2), not
    the labels: an exit that agrees with the final classifier costs no accuracy where it exits, and with a few
    hundred images the teacher's soft targets say far more than the labels (measured on VWW after block 8:
    97% of the validation images exit within the budget, against 82-92% when half the target is the label).
    Returns `model` with the heads' weights set."""
    import keras
    from keras import layers

    from tinyexit.train import seed_everything

    if data.train.augment is None:
        raise TinyexitError(f"the {data.task} dataset has no training augmentation to draw views from")

    def outputs_on_views(layer: str) -> np.ndarray:
        """`layer`'s outputs on the views, drawn afresh from the same seed for every layer (too big to keep)."""
        extractor = keras.Model(model.inputs, model.get_layer(layer).output)
        rng, everyone = np.random.default_rng(seed), np.arange(len(data.train))
        return np.concatenate([extractor.predict(data.train.augment(everyone, rng), batch_size=200, verbose=0)
                               for _ in range(views)])

    soft = _probabilities(outputs_on_views("final")) ** (1.0 / temperature)
    target = soft / soft.sum(1, keepdims=True)
    for j, (cut, _) in enumerate(spec.cuts):
        seed_everything(seed + j)
        features = outputs_on_views(cut)
        inputs = keras.Input(features.shape[1:])
        head = keras.Model(inputs, layers.Rescaling(1.0 / temperature)(exit_head(inputs, layers, spec, j)))
        steps = epochs * int(np.ceil(len(features) / 64))
        head.compile(keras.optimizers.AdamW(keras.optimizers.schedules.CosineDecay(3e-3, max(steps, 1)),
                                            weight_decay=1e-3),
                     keras.losses.CategoricalCrossentropy(from_logits=True))
        head.fit(features, target, epochs=epochs, batch_size=64, shuffle=True, verbose=verbose)
        for layer in head.layers:
            if layer.weights and not isinstance(layer, layers.Rescaling):
                model.get_layer(layer.name).set_weights(layer.get_weights())
    return model


def _probabilities(outputs: np.ndarray) -> np.ndarray:
    """The pretrained model's outputs as probabilities (it may end in a softmax or in logits)."""
    if outputs.min() >= 0 and np.allclose(outputs.sum(1), 1.0, atol=1e-3):
        return outputs
    e = np.exp(outputs - outputs.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def int8_accuracy(model, representative: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of a Keras model quantized to full int8 as is (no exits), run by TFLite Micro."""
    from tinyexit.export import convert_int8
    from tinyexit.reference import StageInterpreter
    from tinyexit.tflite_graph import Graph

    buf = convert_int8(model, representative)
    g = Graph(buf)
    inp = g.tensors[g.inputs[0]]
    q = np.clip(np.round(x / inp.scale[0]) + inp.zero_point[0], -128, 127).astype(np.int8)
    run = StageInterpreter(buf, name="pretrained int8")
    pred = np.array([run(q[i:i + 1])[0].reshape(-1).argmax() for i in range(len(q))])
    return float((pred == y).mean())
