"""Keyword spotting on Google Speech Commands, with the MLPerf Tiny DS-CNN input features.

Twelve classes as in MLPerf Tiny / T-RECX: ten words, silence and unknown. Features follow MLPerf
Tiny's KWS training code: each 1 s clip at 16 kHz is divided by its maximum, padded to 16,000 samples
and clipped to [-1, 1]; STFT with 30 ms frames (480 samples), 20 ms hop (320), a 512-point FFT and a
periodic Hann window; magnitude; 40 mel bins from 20 to 4,000 Hz; log(mel + 1e-6); the first 10
MFCCs (TensorFlow's DCT-II with HTK scaling) -> 49 x 10. The clips are split by speaker.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import wave
from pathlib import Path

import numpy as np

from tinyexit.data import Dataset, Split
from tinyexit.errors import TinyexitError
from tinyexit.paths import cache_dir, shared_datasets

WORDS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]
CLASSES = WORDS + ["_silence_", "_unknown_"]  # MLPerf Tiny's label order
RATE = 16000
FRAME, HOP, FFT, MELS, COEFFS = 480, 320, 512, 40, 10
FRAMES = 1 + (RATE - FRAME) // HOP  # 49
RECIPE_VERSION = 1
SPLIT_SHARES = (0.60, 0.15, 0.25)  # train / validation / test, by speaker

_CLIP = re.compile(r"(?:^|/)([^/]+)/([^/]+\.wav)$")


def default_path() -> Path:
    return shared_datasets() / "kws" / "speech_commands_v0.02_test.tar.xz"


def speaker_of(folder: str, filename: str) -> str:
    """The speaker hash (the part before `_nohash_`); silence clips have none and count as their own."""
    stem = filename.split("_nohash_")[0]
    return stem.rsplit("_", 1)[-1] if "_nohash_" in filename else f"{folder}/{filename}"


def split_of(speaker: str) -> int:
    """0 train, 1 validation, 2 test: a stable hash of the speaker, so no speaker is on two sides."""
    u = int(hashlib.sha1(speaker.encode()).hexdigest()[:8], 16) / 2**32
    return 0 if u < SPLIT_SHARES[0] else (1 if u < SPLIT_SHARES[0] + SPLIT_SHARES[1] else 2)


def label_of(folder: str) -> int | None:
    if folder in WORDS:
        return WORDS.index(folder)
    if folder == "_silence_":
        return CLASSES.index("_silence_")
    if folder == "_background_noise_":
        return None
    return CLASSES.index("_unknown_")  # `_unknown_` and every other word of the full dataset


def read_wav(data: bytes, name: str) -> np.ndarray:
    try:
        with wave.open(io.BytesIO(data)) as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1 or w.getframerate() != RATE:
                raise TinyexitError(f"{name}: expected 16 kHz mono 16-bit PCM, got {w.getframerate()} Hz, "
                                    f"{w.getnchannels()} channel(s), {8 * w.getsampwidth()}-bit")
            return np.frombuffer(w.readframes(w.getnframes()), np.int16)
    except (wave.Error, EOFError) as err:
        raise TinyexitError(f"{name}: not a readable WAV file ({err})") from None


def _clips(path: Path):
    """(folder, filename, wav bytes) of every clip, from a folder or the archive."""
    if path.is_dir():
        for f in sorted(path.rglob("*.wav")):
            yield f.parent.name, f.name, f.read_bytes()
    elif path.is_file():
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    m = _CLIP.search(member.name)
                    if member.isfile() and m:
                        yield m.group(1), m.group(2), tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError) as err:
            raise TinyexitError(f"{path}: cannot read archive ({err})") from None
    else:
        raise TinyexitError(f"KWS data not found: {path} (give the Speech Commands folder or archive)")


def fit_second(audio: np.ndarray) -> np.ndarray:
    """int16 audio -> float32 of exactly one second, MLPerf's way: divided by its maximum, zero padded."""
    x = audio.astype(np.float32)[:RATE]
    peak = x.max()
    x = x / peak if peak > 0 else x
    return np.pad(x, (0, RATE - len(x)))


def mfcc(audio: np.ndarray) -> np.ndarray:
    """(N, 16000) float audio in [-1, 1] -> (N, 49, 10) MFCCs, as MLPerf Tiny's DS-CNN expects."""
    import tensorflow as tf

    x = tf.clip_by_value(tf.convert_to_tensor(audio, tf.float32), -1.0, 1.0)
    spec = tf.abs(tf.signal.stft(x, frame_length=FRAME, frame_step=HOP, fft_length=FFT))
    mel = tf.signal.linear_to_mel_weight_matrix(MELS, FFT // 2 + 1, RATE, 20.0, 4000.0)
    log_mel = tf.math.log(tf.tensordot(spec, mel, 1) + 1e-6)
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :COEFFS].numpy()


def load_clips(path: str | Path | None = None):
    """Audio (N, 16000) float32, labels, speakers, split ids; cached after the first read."""
    path = Path(path) if path else default_path()
    if not path.exists():
        raise TinyexitError(f"KWS data not found: {path} (give the Speech Commands folder or archive)")
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}|{RECIPE_VERSION}".encode()).hexdigest()[:16]
    cached = cache_dir() / f"kws_clips_{key}.npz"
    if cached.exists():
        with np.load(cached) as z:
            return z["audio"], z["y"], z["speaker"], z["split"]
    audio, y, speakers = [], [], []
    for folder, name, data in _clips(path):
        label = label_of(folder)
        if label is None:
            continue
        audio.append(fit_second(read_wav(data, f"{folder}/{name}")))
        y.append(label)
        speakers.append(speaker_of(folder, name))
    if not audio:
        raise TinyexitError(f"{path}: no Speech Commands clips found (expected <label>/<file>.wav)")
    audio, y, speaker = np.stack(audio), np.asarray(y, np.int64), np.asarray(speakers)
    split = np.asarray([split_of(s) for s in speakers], np.int64)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, audio=audio, y=y, speaker=speaker, split=split)
    tmp.replace(cached)
    return audio, y, speaker, split


def shift_and_mix(audio: np.ndarray, noise: np.ndarray, rng: np.random.Generator, max_shift: int = 1600,
                  noise_probability: float = 0.8, max_noise: float = 0.1) -> np.ndarray:
    """Training augmentation as in the Speech Commands recipe: a random shift of up to 100 ms (zero
    filled) and, with some probability, a random training-split noise clip at a random low volume."""
    n = len(audio)
    out = np.zeros_like(audio)
    shifts = rng.integers(-max_shift, max_shift + 1, n)
    for i, s in enumerate(shifts):
        if s >= 0:
            out[i, s:] = audio[i, :RATE - s]
        else:
            out[i, :RATE + s] = audio[i, -s:]
    if len(noise):
        mix = rng.random(n) < noise_probability
        volume = rng.uniform(0, max_noise, n) * mix
        out += volume[:, None] * noise[rng.integers(0, len(noise), n)]
    return np.clip(out, -1, 1)


def load_kws(path: str | Path | None = None) -> Dataset:
    audio, y, speaker, split = load_clips(path)
    features = cache_dir() / f"kws_mfcc_{hashlib.sha256(audio[:, ::97].tobytes()).hexdigest()[:16]}_{RECIPE_VERSION}.npy"
    if features.exists():
        x = np.load(features)
    else:
        x = np.concatenate([mfcc(audio[i:i + 512]) for i in range(0, len(audio), 512)])[..., None].astype(np.float32)
        np.save(features, x)

    def part(k: int) -> Split:
        m = split == k
        return Split(x[m], y[m], speaker[m])

    train = part(0)
    train_audio = audio[split == 0]
    noise = train_audio[y[split == 0] == CLASSES.index("_silence_")]  # background recordings, train side only
    train.augment = lambda idx, rng: mfcc(shift_and_mix(train_audio[idx], noise, rng))[..., None]
    preprocessing = {
        "kind": "mfcc",
        "source": "Speech Commands v0.02 clips, 16 kHz mono 16-bit, 1 s",
        "recipe": "x / max(x), zero pad to 16000, clip [-1, 1]; STFT frame 480, hop 320, FFT 512, periodic "
                  "Hann; |STFT|; 40 mel bins 20-4000 Hz; log(mel + 1e-6); first 10 MFCCs (MLPerf Tiny KWS)",
        "layout": "NHWC (1, 49, 10, 1): frames, coefficients, 1",
        "then": "q = clip(round(mfcc / input.scale) + input.zero_point, -128, 127)",
        "split": "by speaker hash: 60% train / 15% validation / 25% test",
    }
    return Dataset("kws", CLASSES, train, part(1), part(2), preprocessing)
