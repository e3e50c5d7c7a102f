"""Human activity recognition from the UCI HAPT raw recordings, windowed the UCI HAR way.

Recipe (Anguita et al., UCI HAR): per recording, a median filter and a 3rd-order Butterworth low-pass at
20 Hz remove noise; a 3rd-order Butterworth low-pass at 0.3 Hz splits gravity from body acceleration.
Nine channels (body_acc xyz, body_gyro xyz, total_acc xyz) are cut into 128-sample windows (2.56 s at
50 Hz) with 50% overlap inside each labelled segment of the six basic activities.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path

import numpy as np

from tinyexit.data import Dataset, Split
from tinyexit.errors import TinyexitError
from tinyexit.paths import cache_dir, shared_datasets

CLASSES = ["walking", "walking_upstairs", "walking_downstairs", "sitting", "standing", "laying"]
TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)  # the official UCI HAR / HAPT test split
RATE_HZ = 50.0
WINDOW = 128
STEP = 64
CHANNELS = ["body_acc_x", "body_acc_y", "body_acc_z", "body_gyro_x", "body_gyro_y", "body_gyro_z",
            "total_acc_x", "total_acc_y", "total_acc_z"]
RECIPE_VERSION = 1  # bump when the windows change, so caches are rebuilt

_RAW_NAME = re.compile(r"(acc|gyro)_exp(\d+)_user(\d+)\.txt$")


def default_path() -> Path:
    return shared_datasets() / "har" / "HAPT.tar.xz"


def validation_subjects(train_subjects: list[int]) -> list[int]:
    """Every fifth training subject (4 of 21) validates; deterministic so splits are comparable."""
    return sorted(train_subjects)[2::5]


class _Source:
    """The HAPT files, from an extracted folder or straight from the official archive."""

    def __init__(self, path: Path):
        self.path = path
        self._files: dict[str, bytes] = {}
        if path.is_dir():
            labels = sorted(path.rglob("RawData/labels.txt"))
            if not labels:
                raise TinyexitError(f"{path}: no RawData/labels.txt below it (not the HAPT layout)")
            raw_dir = labels[0].parent
            for f in raw_dir.iterdir():
                if f.name == "labels.txt" or _RAW_NAME.search(f.name):
                    self._files[f.name] = f.read_bytes()
        elif path.is_file():
            try:
                with tarfile.open(path) as tar:
                    for member in tar:
                        name = member.name.rsplit("/", 1)[-1]
                        if "RawData/" in member.name and (name == "labels.txt" or _RAW_NAME.search(name)):
                            self._files[name] = tar.extractfile(member).read()
            except (tarfile.TarError, EOFError, OSError) as err:
                raise TinyexitError(f"{path}: cannot read archive ({err})") from None
            if "labels.txt" not in self._files:
                raise TinyexitError(f"{path}: no RawData/labels.txt inside (not the HAPT archive)")
        else:
            raise TinyexitError(f"HAR data not found: {path} (give the HAPT folder or HAPT.tar.xz)")

    def table(self, name: str, columns: int) -> np.ndarray:
        if name not in self._files:
            raise TinyexitError(f"{self.path}: missing RawData/{name}")
        try:
            data = np.loadtxt(io.BytesIO(self._files[name]), dtype=np.float64, ndmin=2)
        except ValueError as err:
            raise TinyexitError(f"{self.path}: malformed RawData/{name} ({err})") from None
        if data.shape[1] != columns or len(data) == 0:
            raise TinyexitError(f"{self.path}: malformed RawData/{name} "
                                f"(expected {columns} columns, got shape {data.shape})")
        return data


def _filter(acc: np.ndarray, gyro: np.ndarray) -> np.ndarray:
    from scipy.signal import butter, medfilt, sosfiltfilt

    noise = butter(3, 20.0, fs=RATE_HZ, output="sos")
    gravity_lp = butter(3, 0.3, fs=RATE_HZ, output="sos")
    clean = lambda s: sosfiltfilt(noise, np.stack([medfilt(c, 3) for c in s.T], axis=1), axis=0)  # noqa: E731
    total_acc = clean(acc)
    body_gyro = clean(gyro)
    body_acc = total_acc - sosfiltfilt(gravity_lp, total_acc, axis=0)
    return np.concatenate([body_acc, body_gyro, total_acc], axis=1).astype(np.float32)


def _windows(source: _Source) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = source.table("labels.txt", 5).astype(np.int64)
    xs, ys, subjects = [], [], []
    for exp, user in sorted({(int(e), int(u)) for e, u in labels[:, :2]}):
        acc = source.table(f"acc_exp{exp:02d}_user{user:02d}.txt", 3)
        gyro = source.table(f"gyro_exp{exp:02d}_user{user:02d}.txt", 3)
        if len(acc) != len(gyro):
            raise TinyexitError(f"{source.path}: exp{exp:02d}_user{user:02d}: acc has {len(acc)} rows, "
                                f"gyro {len(gyro)}")
        signal = _filter(acc, gyro)
        for _, _, activity, start, end in labels[(labels[:, 0] == exp) & (labels[:, 1] == user)]:
            if not 1 <= activity <= len(CLASSES):
                continue  # postural transitions are not among the six basic activities
            if end > len(signal) or start < 1:
                raise TinyexitError(f"{source.path}: labels.txt segment {start}-{end} outside "
                                    f"exp{exp:02d}_user{user:02d} ({len(signal)} rows)")
            segment = signal[start - 1:end]
            for s in range(0, len(segment) - WINDOW + 1, STEP):
                xs.append(segment[s:s + WINDOW])
                ys.append(activity - 1)
                subjects.append(user)
    if not xs:
        raise TinyexitError(f"{source.path}: no windows of the six basic activities found")
    # C order, as a cached copy loads: float32 statistics over another layout sum in another order
    return np.ascontiguousarray(np.stack(xs)), np.asarray(ys, np.int64), np.asarray(subjects, np.int64)


def _cache_key(path: Path) -> str:
    stat = path.stat()
    parts = [str(path.resolve()), str(stat.st_size), str(int(stat.st_mtime)), str(RECIPE_VERSION)]
    if path.is_dir():
        labels = sorted(path.rglob("RawData/labels.txt"))
        parts += [str(p.stat().st_mtime) for p in labels]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def load_windows(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All windows (N, 128, 9) float32, labels (N,) and subject ids (N,), cached after the first read."""
    path = Path(path) if path else default_path()
    if not path.exists():
        raise TinyexitError(f"HAR data not found: {path} (give the HAPT folder or HAPT.tar.xz)")
    cached = cache_dir() / f"har_windows_{_cache_key(path)}.npz"
    if cached.exists():
        with np.load(cached) as z:
            return z["x"], z["y"], z["subject"]
    x, y, subject = _windows(_Source(path))
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, y=y, subject=subject)
    tmp.replace(cached)
    return x, y, subject


def load_har(path: str | Path | None = None) -> Dataset:
    x, y, subject = load_windows(path)
    test_mask = np.isin(subject, TEST_SUBJECTS)
    train_subjects = sorted(set(subject[~test_mask].tolist()))
    val_mask = np.isin(subject, validation_subjects(train_subjects))
    train_mask = ~test_mask & ~val_mask
    mean = x[train_mask].mean(axis=(0, 1))
    std = x[train_mask].std(axis=(0, 1)) + 1e-6

    def split(mask: np.ndarray) -> Split:
        # model layout (N, time, 1, channels): 1-D convolutions as (k x 1) 2-D ones, so TFLite emits
        # plain CONV_2D / DEPTHWISE_CONV_2D with no reshapes around them.
        xs = ((x[mask] - mean) / std).astype(np.float32)[:, :, None, :]
        return Split(xs, y[mask], subject[mask])

    train = split(train_mask)
    train.augment = lambda idx, rng: rotate_and_scale(train.x[idx], rng, mean, std)

    preprocessing = {
        "kind": "har_windows",
        "source": "UCI HAPT RawData (acc in g, gyro in rad/s, 50 Hz)",
        "recipe": "median filter 3, Butterworth 3rd order low-pass 20 Hz (zero-phase), gravity = "
                  "Butterworth 3rd order low-pass 0.3 Hz; windows of 128 samples, step 64",
        "channels": CHANNELS,
        "layout": "NHWC (1, 128, 1, 9): time, 1, channel",
        "normalize": {"mean": mean.astype(float).tolist(), "std": std.astype(float).tolist()},
        "then": "x_norm = (x - mean) / std; q = clip(round(x_norm / input.scale) + input.zero_point, -128, 127)",
        "test_subjects": list(TEST_SUBJECTS),
        "validation_subjects": validation_subjects(train_subjects),
    }
    return Dataset("har", CLASSES, train, split(val_mask), split(test_mask), preprocessing)


def rotate_and_scale(x: np.ndarray, rng: np.random.Generator, mean: np.ndarray, std: np.ndarray,
                     max_degrees: float = 15.0, scale: float = 0.1) -> np.ndarray:
    """Training augmentation: the phone sits a little differently on every subject. Rotate each window's
    three sensor triplets by one small random rotation and scale its amplitude, in physical units."""
    n = len(x)
    raw = x[:, :, 0, :] * std + mean  # (N, T, 9)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = np.radians(rng.uniform(-max_degrees, max_degrees, n))
    k = np.zeros((n, 3, 3))  # Rodrigues: R = I + sin(a) K + (1 - cos(a)) K^2
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k -= k.transpose(0, 2, 1)
    rot = np.eye(3) + np.sin(angle)[:, None, None] * k + (1 - np.cos(angle))[:, None, None] * (k @ k)
    gain = rng.uniform(1 - scale, 1 + scale, (n, 1, 1))
    triplets = raw.reshape(n, -1, 3, 3)  # (N, T, sensor, axis)
    out = np.einsum("nij,ntsj->ntsi", rot, triplets) * gain[..., None]
    return (((out.reshape(n, -1, 9) - mean) / std)[:, :, None, :]).astype(np.float32)

