"""Early-exit CNNs: a backbone of conv / depthwise-separable blocks with T-RECX exit heads.

All convolutions are 2-D so that TFLite emits plain CONV_2D / DEPTHWISE_CONV_2D; 1-D signals (HAR) use
(k x 1) kernels on an (T, 1, C) layout. Batch norm follows every convolution and is folded into it by the
TFLite converter; activations are ReLU, so every block is int8-friendly.

Naming is the contract with export: block i's output layer is `block{i}`, exit j's logits `exit{j}`,
the final logits `final`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinyexit.errors import TinyexitError


@dataclass
class Block:
    kind: str  # "conv" (full convolution) or "ds" (depthwise-separable)
    filters: int
    kernel: tuple[int, int]
    stride: tuple[int, int]


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model; saved next to its weights as `spec.json`."""

    task: str
    classes: list[str]
    input_shape: tuple[int, int, int]
    blocks: list[Block]
    exits_after: list[int]  # 1-based block indices that get an early exit
    exit_width: int = 16  # channels of an exit head's pointwise + depthwise convolutions
    exit_kernel: tuple[int, int] = (5, 1)
    early_view_assist: bool = True  # T-RECX's early-view-assisted final exit
    dropout: float = 0.3
    input_noise: float = 0.1  # std of Gaussian noise added to the (normalized) input while training
    preprocessing: dict = field(default_factory=dict)
    # retrofitted models (no `blocks`): (cut layer, exit head) pairs in the pretrained network
    cuts: list[list[str]] | None = None

    @property
    def n_exits(self) -> int:
        return len(self.cuts) if self.cuts else len(self.exits_after)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        d = json.loads(text)
        d["blocks"] = [Block(b["kind"], b["filters"], tuple(b["kernel"]), tuple(b["stride"])) for b in d["blocks"]]
        d["input_shape"] = tuple(d["input_shape"])
        d["exit_kernel"] = tuple(d["exit_kernel"])
        d.setdefault("cuts", None)
        return cls(**d)

    def validate(self) -> None:
        if self.cuts:
            return
        for b in self.exits_after:
            if not 1 <= b < len(self.blocks):
                raise TinyexitError(f"exit after block {b}: choose 1..{len(self.blocks) - 1} "
                                    f"(the backbone has {len(self.blocks)} blocks)")
        if sorted(set(self.exits_after)) != list(self.exits_after):
            raise TinyexitError(f"exits_after must be increasing and unique, got {self.exits_after}")


def har_blocks() -> list[Block]:
    """The HAR backbone: strided early blocks keep the cost to the first exit low (~14 k parameters)."""
    # strides are (2, 2) rather than (2, 1): identical on a width-1 axis, and TensorFlow's non-oneDNN
    # depthwise kernel rejects unequal strides
    return [
        Block("conv", 16, (5, 1), (2, 2)),   # 128 -> 64
        Block("ds", 32, (5, 1), (2, 2)),     # 64 -> 32
        Block("ds", 64, (5, 1), (2, 2)),     # 32 -> 16
        Block("ds", 64, (5, 1), (1, 1)),
        Block("ds", 64, (5, 1), (1, 1)),
    ]


def kws_blocks() -> list[Block]:
    """MLPerf Tiny's DS-CNN for keyword spotting: a 10x4 stride-2 convolution, four 3x3 DS blocks."""
    return [Block("conv", 64, (10, 4), (2, 2))] + [Block("ds", 64, (3, 3), (1, 1)) for _ in range(4)]


# task -> (backbone, default early exits (1-based blocks), exit head kernel)
BACKBONES = {
    "har": (har_blocks, [2], (5, 1)),
    "kws": (kws_blocks, [3], (3, 3)),  # T-RECX: after the 2nd depthwise-separable block
}


def default_spec(task: str, classes: list[str], input_shape, preprocessing: dict | None = None,
                 exits_after: list[int] | None = None) -> ModelSpec:
    if task not in BACKBONES:
        raise TinyexitError(f"no default backbone for task '{task}' (known: {', '.join(BACKBONES)})")
    blocks, default_exits, exit_kernel = BACKBONES[task]
    return ModelSpec(task, list(classes), tuple(input_shape), blocks(),
                     exits_after=list(exits_after) if exits_after else list(default_exits),
                     exit_kernel=exit_kernel, preprocessing=preprocessing or {})


def _conv_bn_relu(x, layers, filters, kernel, stride, name):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=name)(x)


def _dw_bn_relu(x, layers, kernel, stride, name):
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(name=f"{name}_dwbn")(x)
    return layers.ReLU(name=f"{name}_dwrelu")(x)


def global_pool(x, layers, name: str):
    """Global average pooling as AVERAGE_POOL_2D (+ a flatten that export folds away): TFLite's MEAN
    kernel requantizes in floating point, average pooling is integer-only, so the firmware matches it
    bit for bit without an FPU."""
    pooled = layers.AveragePooling2D(pool_size=tuple(x.shape[1:3]), name=f"{name}_pool")(x)
    return layers.Flatten(name=name)(pooled)


def exit_head(x, layers, spec: ModelSpec, j: int):
    """T-RECX exit: pointwise -> depthwise -> global average pool -> dense logits."""
    x = _conv_bn_relu(x, layers, spec.exit_width, (1, 1), (1, 1), f"exit{j}_pw")
    x = _dw_bn_relu(x, layers, spec.exit_kernel, (1, 1), f"exit{j}")
    x = global_pool(x, layers, f"exit{j}_gap")
    return layers.Dense(len(spec.classes), name=f"exit{j}")(x)


def build(spec: ModelSpec):
    """The trainable Keras model: outputs [exit0 logits, ..., final logits]."""
    import keras
    from keras import layers

    spec.validate()
    inputs = keras.Input(spec.input_shape, name="input")
    x = layers.GaussianNoise(spec.input_noise, name="input_noise")(inputs) if spec.input_noise else inputs
    exits = []
    for i, b in enumerate(spec.blocks, start=1):
        if b.kind == "conv":
            x = _conv_bn_relu(x, layers, b.filters, b.kernel, b.stride, f"block{i}")
        elif b.kind == "ds":
            x = _dw_bn_relu(x, layers, b.kernel, b.stride, f"block{i}")
            x = _conv_bn_relu(x, layers, b.filters, (1, 1), (1, 1), f"block{i}")
        else:
            raise TinyexitError(f"unknown block kind '{b.kind}'")
        if i in spec.exits_after:
            exits.append(exit_head(x, layers, spec, len(exits)))
    pooled = global_pool(x, layers, "final_gap")
    if spec.early_view_assist and spec.exits_after:
        # A depthwise view of the final features, tied to the last early exit's depthwise weights for
        # most of training (see EarlyViewTie), then free; pooled and concatenated before the dense layer.
        view = _dw_bn_relu(x, layers, spec.exit_kernel, (1, 1), "eva")
        view = global_pool(view, layers, "eva_gap")
        pooled = layers.Concatenate(name="final_concat")([pooled, view])
    if spec.dropout:
        pooled = layers.Dropout(spec.dropout, name="final_dropout")(pooled)
    final = layers.Dense(len(spec.classes), name="final")(pooled)
    return keras.Model(inputs, exits + [final], name=f"{spec.task}_early_exit")


def backbone_only(spec: ModelSpec):
    """The same backbone with no exit heads (and no early view): the cost baseline."""
    from dataclasses import replace

    return build(replace(spec, exits_after=[], early_view_assist=False))


def output_names(spec: ModelSpec) -> list[str]:
    return [f"exit{j}" for j in range(spec.n_exits)] + ["final"]


def save(model, spec: ModelSpec, directory: str | Path) -> Path:
    """model.keras + spec.json, renamed into place together (a failed save leaves the folder as it was)."""
    import tempfile

    from tinyexit import atomic

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".saving.") as tmp:
        model.save(Path(tmp) / "model.keras")  # Keras picks the format from the suffix: save, then copy
        with atomic.outputs() as out:
            out.write_bytes(directory / "model.keras", (Path(tmp) / "model.keras").read_bytes())
            out.write_text(directory / "spec.json", spec.to_json())
    return directory


def load(directory: str | Path):
    """A trained model folder (model.keras + spec.json) -> (keras model, spec)."""
    import keras

    directory = Path(directory)
    if directory.is_file() and directory.name.endswith(".keras"):
        directory = directory.parent
    model_file, spec_file = directory / "model.keras", directory / "spec.json"
    for f in (model_file, spec_file):
        if not f.is_file():
            raise TinyexitError(f"{directory}: missing {f.name} (train a model with `tinyexit train` first)")
    try:
        spec = ModelSpec.from_json(spec_file.read_text())
    except (ValueError, KeyError, TypeError) as err:
        raise TinyexitError(f"{spec_file}: malformed spec ({err})") from None
    try:
        model = keras.models.load_model(model_file)
    except Exception as err:  # Keras raises many types for a bad archive
        raise TinyexitError(f"{model_file}: cannot load Keras model ({type(err).__name__}: {err})") from None
    return model, spec
