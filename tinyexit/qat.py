"""Sub-byte weights: per-layer 8/4/2-bit weights, from Keras fake quantization to the int8 `.tflite`.

Training side: `quantized_copy` swaps every Conv2D / DepthwiseConv2D / Dense of a float model for a
fake-quantized twin (per-channel symmetric narrow-range grid, straight-through estimator) and `fine_tune`
trains it a few epochs.

Export side: TFLite's converter quantizes every weight tensor to int8 with the per-channel scale
max|w| / 127, whatever grid the weights lie on, so a 4-bit layer lands as int8 values like
round(L * 127 / 7). `narrow_weights` re-expresses such a tensor on its own grid: values L in the
sub-byte range and scale * 127 / max|L| (an exact rewrite: the same real weights), with the bias
requantized to the new scale. A tensor that is not on a grid (a float layer) is rounded to the grid
with the least squared error instead (post-training quantization). The result is still an ordinary
int8 model that TFLite Micro runs; codegen packs such filters (tinyexit/codegen/ops.py).
"""

from __future__ import annotations

import numpy as np

from tinyexit.errors import TinyexitError
from tinyexit.tflite_graph import WEIGHT_INPUT, Graph, serialize

WIDTHS = (8, 4, 2)
# TFLite Micro's kernels that take INT4 filters with int8 inputs (its FULLY_CONNECTED rejects them)
INT4_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
LEVELS = {4: 7, 2: 1}  # narrow-range symmetric: values in [-LEVELS, LEVELS]


def snap_channel(q: np.ndarray, bits: int) -> tuple[np.ndarray, float]:
    """int8 values of one channel -> (values on the `bits` grid, factor by which the scale grows)."""
    n = LEVELS[bits]
    peak = float(np.abs(q).max(initial=0))
    if peak == 0:
        return np.zeros_like(q), 1.0
    q = q.astype(np.float64)
    for m in range(n, 0, -1):  # already on a grid with m levels each side (quantization-aware training)
        levels = q * m / peak
        if np.all(np.abs(levels - np.round(levels)) <= 0.5 * m / peak + 1e-6):
            return np.round(levels), peak / m
    best = (np.inf, None, 1.0)  # not on a grid: the clipping ratio with the least squared error
    for ratio in np.linspace(0.25, 1.0, 61):
        step = peak * ratio / n
        levels = np.clip(np.round(q / step), -n, n)
        err = float(((levels * step - q) ** 2).sum())
        if err < best[0]:
            best = (err, levels, step)
    return best[1], best[2]


def narrow_weights(model_bytes: bytes, bits_of: dict[str, int], int4_tensors: bool = False) -> bytes:
    """Rewrite the filters named in `bits_of` (weight tensor name -> 4 or 2) onto their sub-byte grids.

    int4_tensors: store the CONV_2D / DEPTHWISE_CONV_2D ones as TFLite's packed INT4 type (for stock TFLite
    Micro) instead of int8."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    graph = Graph(model_bytes, "converted model")
    model = graph.model
    tensors = model.subgraphs[0].tensors
    done = set()
    for op in graph.ops:
        w = graph.weight_tensor(op)
        if w is None or w.name not in bits_of or bits_of[w.name] == 8:
            continue
        bits = bits_of[w.name]
        if bits not in LEVELS or w.dtype != "int8" or w.scale is None:
            raise TinyexitError(f"{w.name}: cannot store {w.dtype} weights with {bits} bits")
        if w.index in done:
            continue
        done.add(w.index)
        axis = w.quantized_dimension if len(w.scale) > 1 else None
        values = w.data.astype(np.int64)
        factors = np.ones(len(w.scale))
        narrowed = np.zeros_like(values)
        if axis is None:
            narrowed, factors[0] = snap_channel(values, bits)
        else:
            for c in range(values.shape[axis]):
                index = tuple(slice(None) if d != axis else c for d in range(values.ndim))
                narrowed[index], factors[c] = snap_channel(values[index], bits)
        narrowed = narrowed.astype(np.int8)
        scales = (w.scale * factors).astype(np.float32)
        t = tensors[w.index]
        t.quantization.scale = [float(s) for s in scales]
        if int4_tensors and op.op in INT4_OPS:
            nibbles = np.zeros(-(-narrowed.size // 2) * 2, np.uint8)
            nibbles[:narrowed.size] = narrowed.reshape(-1).astype(np.uint8) & 15
            model.buffers[t.buffer].data = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)
            t.type = schema.TensorType.INT4
        else:
            model.buffers[t.buffer].data = narrowed.reshape(-1).view(np.uint8)
        bias_index = op.inputs[2] if len(op.inputs) > 2 else -1
        if bias_index >= 0 and graph.tensors[bias_index].is_constant:
            b = graph.tensors[bias_index]
            per_channel = np.broadcast_to(factors, b.data.shape)
            rescaled = np.round(b.data.astype(np.float64) / per_channel)
            model.buffers[tensors[bias_index].buffer].data = rescaled.astype(np.int32).view(np.uint8)
            if b.scale is not None:
                tensors[bias_index].quantization.scale = [float(s) for s in (np.broadcast_to(b.scale, factors.shape) * factors)]
    missing = set(n for n, b in bits_of.items() if b < 8) - {graph.tensors[i].name for i in done}
    if missing:
        raise TinyexitError(f"converted model has no weight tensor named {sorted(missing)[0]}")
    return serialize(model)


def weight_tensor_names(graph: Graph) -> list[str]:
    return [graph.weight_tensor(op).name for op in graph.ops if op.op in WEIGHT_INPUT and graph.weight_tensor(op)]


# --- Keras side ------------------------------------------------------------------------------------------

QUANTIZABLE = ("Conv2D", "DepthwiseConv2D", "Dense")


def quantizable_layers(model) -> list[str]:
    """Names of the layers whose weights can take 8, 4 or 2 bits, in model order."""
    return [layer.name for layer in model.layers if type(layer).__name__ in QUANTIZABLE
            or type(layer).__name__ in tuple(f"FakeQuant{n}" for n in QUANTIZABLE)]


def best_steps(kernel: np.ndarray, bits: int, out_axis: int) -> np.ndarray:
    """Per output channel, the grid step with the least squared error (searched over clipping ratios)."""
    w = np.moveaxis(kernel, out_axis, 0).reshape(kernel.shape[out_axis], -1).astype(np.float64)
    n = LEVELS[bits]
    peak = np.maximum(np.abs(w).max(axis=1), 1e-12)
    best_err, best = np.full(len(w), np.inf), peak / n
    for ratio in np.linspace(0.25, 1.0, 61):
        step = (peak * ratio / n)[:, None]
        err = ((np.clip(np.round(w / step), -n, n) * step - w) ** 2).sum(axis=1)
        better = err < best_err
        best_err[better], best[better] = err[better], step[better, 0]
    return best.astype(np.float32)


def _fake_quant(kernel, step, bits: int):
    """Weights on the grid step * [-n, n] (narrow range, symmetric), straight-through gradient."""
    from keras import ops

    n = LEVELS[bits]
    quantized = ops.clip(ops.round(kernel / step), -n, n) * step
    return kernel + ops.stop_gradient(quantized - kernel)


def _fake_quant_class(base):
    """A drop-in twin of a Keras layer class whose kernel is fake-quantized to `weight_bits` per output channel."""

    class FakeQuant(base):
        def __init__(self, *args, weight_bits: int = 4, **kwargs):
            super().__init__(*args, **kwargs)
            self.weight_bits = weight_bits

        def build(self, input_shape):
            super().build(input_shape)
            channels = self.kernel.shape[-1] if base.__name__ != "DepthwiseConv2D" else (
                self.kernel.shape[-2] * self.kernel.shape[-1])
            self.step = self.add_weight(shape=(channels,), initializer="ones", trainable=False, name="step")

        def quantized_kernel(self):
            from keras import ops

            if base.__name__ == "DepthwiseConv2D":  # steps per output channel = (in channel, multiplier)
                step = ops.reshape(self.step, self.kernel.shape[-2:])
            else:
                step = self.step
            return _fake_quant(self.kernel, step, self.weight_bits)

        def reset_steps(self):
            k = self.kernel.numpy()
            if base.__name__ == "DepthwiseConv2D":
                k = k.reshape(*k.shape[:-2], -1)
            self.step.assign(best_steps(k, self.weight_bits, k.ndim - 1))

        def get_config(self):
            return {**super().get_config(), "weight_bits": self.weight_bits}

        if base.__name__ == "Conv2D":
            def convolution_op(self, inputs, kernel):
                return super().convolution_op(inputs, self.quantized_kernel())
        elif base.__name__ == "DepthwiseConv2D":
            def call(self, inputs):
                from keras import ops

                out = ops.depthwise_conv(inputs, self.quantized_kernel(), strides=self.strides, padding=self.padding,
                                         dilation_rate=self.dilation_rate, data_format=self.data_format)
                if self.use_bias:
                    out = ops.add(out, self.bias)
                return self.activation(out) if self.activation is not None else out
        else:
            def call(self, inputs, training=None):
                from keras import ops

                out = ops.matmul(inputs, self.quantized_kernel())
                if self.bias is not None:
                    out = ops.add(out, self.bias)
                return self.activation(out) if self.activation is not None else out

    FakeQuant.__name__ = f"FakeQuant{base.__name__}"
    return FakeQuant


def quantized_copy(model, bits: dict[str, int]):
    """The float model with each layer named in `bits` (4 or 2) replaced by its fake-quantized twin, weights
    copied; the grid steps start at the least-squared-error ones."""
    import keras
    from keras import layers

    classes = {name: _fake_quant_class(getattr(layers, name)) for name in QUANTIZABLE}

    def clone(layer):
        kind = type(layer).__name__
        if bits.get(layer.name, 8) < 8:
            if kind not in QUANTIZABLE:
                raise TinyexitError(f"layer '{layer.name}' ({kind}) has no weights to quantize")
            return classes[kind].from_config({**layer.get_config(), "weight_bits": bits[layer.name]})
        return layer.__class__.from_config(layer.get_config())

    unknown = set(bits) - {layer.name for layer in model.layers}
    if unknown:
        raise TinyexitError(f"no layer named '{sorted(unknown)[0]}' in the model")
    copy = keras.models.clone_model(model, clone_function=clone)
    for source in model.layers:
        if not source.weights:  # (the input layer is renamed by the clone)
            continue
        target = copy.get_layer(source.name)
        for s, t in zip(source.weights, [w for w in target.weights if not w.path.endswith("step")]):
            t.assign(s)
        if hasattr(target, "reset_steps"):
            target.reset_steps()
    return copy


def fine_tune(model, spec, data, epochs: int = 6, batch_size: int = 64, learning_rate: float = 5e-4,
              early_exit_weight: float = 0.3, seed: int = 0, verbose: int = 2):
    """Quantization-aware fine-tuning: the usual joint loss, a small cosine-decayed rate; the grid steps are
    re-fitted to the weights at every epoch start. Ends on the epoch with the lowest validation loss (weights
    and grid steps as that epoch ended): the fake-quantized loss swings from epoch to epoch."""
    import keras

    from tinyexit.models import output_names
    from tinyexit.train import AugmentedBatches, seed_everything

    seed_everything(seed)
    names = output_names(spec)
    steps = epochs * int(np.ceil(len(data.train) / batch_size))

    class RefitSteps(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            for layer in model.layers:
                if hasattr(layer, "reset_steps"):
                    layer.reset_steps()

    per_output = lambda value: {n: value(n) for n in names} if len(names) > 1 else value("final")  # noqa: E731
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))),
                  loss=per_output(lambda n: keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
                  loss_weights=per_output(lambda n: 1.0 if n == "final" else early_exit_weight))
    targets = (lambda split: {n: split.y for n in names}) if len(names) > 1 else (lambda split: split.y)  # noqa: E731
    train = (AugmentedBatches(data, batch_size, seed, names),) if data.train.augment is not None else (
        data.train.x, targets(data.train))
    model.fit(*train, validation_data=(data.val.x, targets(data.val)), epochs=epochs,
              batch_size=None if len(train) == 1 else batch_size, verbose=verbose,
              callbacks=[RefitSteps(), keras.callbacks.EarlyStopping("val_loss", patience=epochs, verbose=int(verbose > 0),
                                                                     restore_best_weights=True)])
    return model  # steps as the chosen epoch trained with: they define the exported grid


def weight_tensor_bits(graph: Graph, bits: dict[str, int]) -> dict[str, int]:
    """Keras layer name -> width, as weight tensor name -> width in the converted graph (TFLite names a
    filter after the layers it was folded from, e.g. `.../block2_dw_1/depthwise`)."""
    import re

    names = weight_tensor_names(graph)
    out = {}
    for layer, b in bits.items():
        pattern = re.compile(rf"(^|[/;]){re.escape(layer)}(_\d+)?/")
        hits = [n for n in names if pattern.search(n)]
        if len(hits) != 1:
            raise TinyexitError(f"layer '{layer}': {len(hits)} weight tensors in the converted model match it")
        out[hits[0]] = b
    return out
