"""Joint training of all exits: sum of per-exit cross-entropies, early exits weighted (default 0.3)."""

from __future__ import annotations

import numpy as np

from tinyexit.data import Dataset
from tinyexit.models import ModelSpec, build, output_names


def seed_everything(seed: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def early_view_tie(model, spec: ModelSpec, tie_epochs: int):
    """Keras callback: keep the final exit's early-view depthwise kernel equal to the last early exit's
    (tiled over channels when the widths differ) for the first `tie_epochs` epochs, then let it train."""
    import keras

    source = model.get_layer(f"exit{len(spec.exits_after) - 1}_dw")
    target = model.get_layer("eva_dw")

    class EarlyViewTie(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if self.epoch < tie_epochs:
                kernel = source.kernel.numpy()
                channels = target.kernel.shape[2]
                reps = -(-channels // kernel.shape[2])
                target.kernel.assign(np.tile(kernel, (1, 1, reps, 1))[:, :, :channels])

    return EarlyViewTie()


def train(spec: ModelSpec, data: Dataset, epochs: int = 40, batch_size: int = 64, learning_rate: float = 3e-3,
          early_exit_weight: float = 0.3, weight_decay: float = 1e-3, seed: int = 0, verbose: int = 1, model=None,
          augment: bool = True):
    """Train (or continue training `model`) on data.train, validating on data.val. Returns the model."""
    import keras

    seed_everything(seed)
    if model is None:
        model = build(spec)
    names = output_names(spec)
    steps = epochs * int(np.ceil(len(data.train) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(steps, 1))
    per_output = lambda value: {n: value(n) for n in names} if len(names) > 1 else value("final")  # noqa: E731
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay),
        loss=per_output(lambda n: keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
        loss_weights=per_output(lambda n: 1.0 if n == "final" else early_exit_weight),
        metrics=per_output(lambda n: ["accuracy"]),
    )
    callbacks = []
    if spec.early_view_assist and spec.exits_after:
        callbacks.append(early_view_tie(model, spec, tie_epochs=int(0.8 * epochs)))
    # Keras maps dict targets to outputs by name only when there are several outputs
    targets = (lambda split: {n: split.y for n in names}) if len(names) > 1 else (lambda split: split.y)  # noqa: E731
    train_data = (data.train.x, targets(data.train))
    if augment and data.train.augment is not None:
        train_data = (AugmentedBatches(data, batch_size, seed, names),)
    model.fit(*train_data, validation_data=(data.val.x, targets(data.val)), epochs=epochs,
              batch_size=None if len(train_data) == 1 else batch_size, shuffle=True, verbose=verbose,
              callbacks=callbacks)
    return model


def AugmentedBatches(data: Dataset, batch_size: int, seed: int, names: list[str]):
    """Shuffled training batches passed through the dataset's augmentation (seeded, so runs repeat)."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(data.train))

        def __len__(self):
            return int(np.ceil(len(data.train) / batch_size))

        def __getitem__(self, i):
            idx = self.order[i * batch_size:(i + 1) * batch_size]
            x = data.train.augment(idx, self.rng)
            y = data.train.y[idx]
            return x, ({n: y for n in names} if len(names) > 1 else y)

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(data.train))

    return Batches()


def predict_logits(model, x: np.ndarray, batch_size: int = 512) -> list[np.ndarray]:
    """Float logits of every exit, in output order [exit0, ..., final]."""
    out = model.predict(x, batch_size=batch_size, verbose=0)
    return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]
