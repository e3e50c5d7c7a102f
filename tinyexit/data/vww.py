"""Visual wake words: 96x96 RGB person / no-person images.

Reads MLPerf Tiny's raw layout (`*.bin` of 96*96*3 uint8 HWC + `y_labels.csv`: file, classes, label) from a
folder or its archive, and ordinary image folders (one subfolder per class, PNG/JPEG; resized to 96x96).
Inputs are scaled to [0, 1] as the MLPerf Tiny VWW model was trained.
"""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np

from tinyexit.data import Dataset, Split
from tinyexit.errors import TinyexitError
from tinyexit.paths import shared_datasets

CLASSES = ["no_person", "person"]
SIZE = 96
SPLIT_SHARES = (0.4, 0.3, 0.3)  # train (exit heads only) / validation (calibration) / test (held out)


def default_path() -> Path:
    return shared_datasets() / "vww" / "mlperf_vww01.tar.xz"


def _raw_layout(files: dict[str, bytes], where: str) -> tuple[np.ndarray, np.ndarray]:
    labels_name = next((n for n in files if n.endswith("y_labels.csv")), None)
    if labels_name is None:
        raise TinyexitError(f"{where}: no y_labels.csv (expected MLPerf Tiny's VWW layout)")
    images, labels = [], []
    for row in csv.reader(io.StringIO(files[labels_name].decode())):
        if not row:
            continue
        if len(row) < 3:
            raise TinyexitError(f"{where}: malformed y_labels.csv row {row}")
        data = files.get(row[0])
        if data is None:
            raise TinyexitError(f"{where}: y_labels.csv names {row[0]}, which is missing")
        if len(data) != SIZE * SIZE * 3:
            raise TinyexitError(f"{where}: {row[0]} has {len(data)} bytes, expected {SIZE * SIZE * 3} (96x96x3)")
        images.append(np.frombuffer(data, np.uint8).reshape(SIZE, SIZE, 3))
        labels.append(int(row[2]))
    return np.stack(images), np.asarray(labels, np.int64)


def _image_folders(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, name in enumerate(CLASSES):
        folder = path / name
        if not folder.is_dir():
            raise TinyexitError(f"{path}: expected class folders {CLASSES} (or y_labels.csv + .bin files)")
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in (".png", ".jpg", ".jpeg"):
                continue
            try:
                img = Image.open(f).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
            except (UnidentifiedImageError, OSError) as err:
                raise TinyexitError(f"{f}: not a readable image ({err})") from None
            images.append(np.asarray(img, np.uint8))
            labels.append(label)
    if not images:
        raise TinyexitError(f"{path}: no PNG/JPEG images in the class folders")
    return np.stack(images), np.asarray(labels, np.int64)


def load_images(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 96, 96, 3) and labels (N,)."""
    path = Path(path) if path else default_path()
    if path.is_dir():
        if any(path.rglob("y_labels.csv")):
            base = next(path.rglob("y_labels.csv")).parent
            return _raw_layout({f.name: f.read_bytes() for f in base.iterdir() if f.is_file()}, str(path))
        return _image_folders(path)
    if path.is_file():
        try:
            with tarfile.open(path) as tar:
                files = {m.name.rsplit("/", 1)[-1]: tar.extractfile(m).read() for m in tar if m.isfile()}
        except (tarfile.TarError, EOFError, OSError) as err:
            raise TinyexitError(f"{path}: cannot read archive ({err})") from None
        return _raw_layout(files, str(path))
    raise TinyexitError(f"VWW data not found: {path} (give the image folder or mlperf_vww01 archive)")


def load_vww(path: str | Path | None = None, seed: int = 0) -> Dataset:
    images, y = load_images(path)
    x = images.astype(np.float32) / 255.0
    # stratified split; never report accuracy on images the exit heads were trained on
    rng = np.random.default_rng(seed)
    part = np.zeros(len(y), np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        a = int(round(SPLIT_SHARES[0] * len(idx)))
        b = a + int(round(SPLIT_SHARES[1] * len(idx)))
        part[idx[a:b]], part[idx[b:]] = 1, 2
    ids = np.arange(len(y))

    def split(k: int) -> Split:
        m = part == k
        return Split(x[m], y[m], ids[m])

    train = split(0)
    train.augment = lambda idx, rng: augment(train.x[idx], rng)
    preprocessing = {"kind": "image", "layout": "NHWC (1, 96, 96, 3) RGB", "scale": "x / 255",
                     "then": "q = clip(round((x / 255) / input.scale) + input.zero_point, -128, 127)",
                     "split": f"stratified, seed {seed}: 40% train (exit heads) / 30% validation / 30% test"}
    return Dataset("vww", CLASSES, train, split(1), split(2), preprocessing)


def augment(x: np.ndarray, rng: np.random.Generator, max_shift: int = 12) -> np.ndarray:
    """Training augmentation: a random horizontal flip (a person is a person in a mirror), a shift of up to
    `max_shift` pixels each way (edges mirrored) and a brightness / contrast change of up to 10% / 20%."""
    n = len(x)
    flip = rng.random(n) < 0.5
    x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
    padded = np.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="reflect")
    dy, dx = rng.integers(0, 2 * max_shift + 1, (2, n))
    out = np.stack([padded[i, dy[i]:dy[i] + SIZE, dx[i]:dx[i] + SIZE] for i in range(n)])
    brightness = rng.uniform(-0.1, 0.1, (n, 1, 1, 1))
    contrast = rng.uniform(0.8, 1.2, (n, 1, 1, 1))
    return np.clip((out - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0).astype(np.float32)
