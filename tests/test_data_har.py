import shutil
import tarfile

import numpy as np
import pytest

from tinyexit.data import har as har_mod
from tinyexit.errors import TinyexitError

UCI_HAR_COUNTS = [1722, 1544, 1406, 1777, 1906, 1944]  # per class, train + test, UCI HAR


def test_windows_follow_the_uci_har_recipe(har):
    for split in (har.train, har.val, har.test):
        assert split.x.shape[1:] == (128, 1, 9)
        assert split.x.dtype == np.float32
    counts = np.bincount(np.concatenate([har.train.y, har.val.y, har.test.y]), minlength=6)
    for got, want in zip(counts, UCI_HAR_COUNTS):
        assert abs(got - want) <= 0.05 * want, (counts, UCI_HAR_COUNTS)


def test_splits_are_by_subject_with_the_official_test_subjects(har):
    train, val, test = (set(s.groups.tolist()) for s in (har.train, har.val, har.test))
    assert test == set(har_mod.TEST_SUBJECTS)
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == 30 and len(val) >= 3


def test_normalisation_uses_training_statistics_only(har):
    x = har.train.x.reshape(-1, 9)
    assert np.allclose(x.mean(axis=0), 0, atol=1e-3) and np.allclose(x.std(axis=0), 1, atol=1e-2)
    assert len(har.preprocessing["normalize"]["mean"]) == 9


def test_channels_split_gravity_from_body_acceleration(datasets):
    x, _, _ = har_mod.load_windows(datasets / "har" / "HAPT.tar.xz")
    body, total = x[..., 0:3], x[..., 6:9]
    # total acceleration carries ~1 g of gravity; the body part is centred near zero
    assert 0.8 < np.linalg.norm(total.mean(axis=1), axis=-1).mean() < 1.2
    assert np.abs(body.mean(axis=1)).mean() < 0.05


def test_windows_are_cached(datasets, monkeypatch):
    first = har_mod.load_windows(datasets / "har" / "HAPT.tar.xz")
    monkeypatch.setattr(har_mod, "_windows", lambda source: pytest.fail("cache not used"))
    second = har_mod.load_windows(datasets / "har" / "HAPT.tar.xz")
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def _small_layout(datasets, tmp_path):
    """An extracted HAPT folder with two experiments, for corruption tests."""
    with tarfile.open(datasets / "har" / "HAPT.tar.xz") as tar:
        wanted = [m for m in tar if m.name.endswith(("labels.txt", "exp01_user01.txt", "exp02_user01.txt"))]
        tar.extractall(tmp_path, members=wanted, filter="data")
    raw = next(tmp_path.rglob("RawData"))
    labels = (raw / "labels.txt").read_text().splitlines()
    (raw / "labels.txt").write_text("\n".join(l for l in labels if l.split()[0] in ("1", "2")) + "\n")
    return raw


def test_reads_an_extracted_folder(datasets, tmp_path):
    raw = _small_layout(datasets, tmp_path)
    x, y, subject = har_mod.load_windows(raw.parent)
    assert x.shape[1:] == (128, 9) and len(x) > 50 and set(subject.tolist()) == {1}


def test_missing_path_is_one_clear_error(tmp_path):
    with pytest.raises(TinyexitError, match="HAR data not found"):
        har_mod.load_windows(tmp_path / "nowhere")


def test_malformed_recording_is_one_clear_error(datasets, tmp_path):
    raw = _small_layout(datasets, tmp_path)
    (raw / "acc_exp02_user01.txt").write_text("0.1 0.2\n0.3 oops\n")
    with pytest.raises(TinyexitError, match="malformed RawData/acc_exp02_user01.txt"):
        har_mod.load_windows(raw.parent)


def test_missing_recording_is_one_clear_error(datasets, tmp_path):
    raw = _small_layout(datasets, tmp_path)
    (raw / "gyro_exp01_user01.txt").unlink()
    with pytest.raises(TinyexitError, match="missing RawData/gyro_exp01_user01.txt"):
        har_mod.load_windows(raw.parent)


def test_corrupt_archive_is_one_clear_error(datasets, tmp_path):
    broken = tmp_path / "HAPT.tar.xz"
    data = (datasets / "har" / "HAPT.tar.xz").read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(TinyexitError, match="cannot read archive|missing|no RawData"):
        har_mod.load_windows(broken)
    shutil.rmtree(tmp_path)


def test_augmentation_follows_subsets_and_keeps_shapes(har):
    small = har.train.subset(10, seed=1)
    idx = np.array([0, 3, 7])
    mean = np.asarray(har.preprocessing["normalize"]["mean"])
    std = np.asarray(har.preprocessing["normalize"]["std"])
    got = small.augment(idx, np.random.default_rng(5))
    want = har_mod.rotate_and_scale(small.x[idx], np.random.default_rng(5), mean, std)
    assert got.shape == (3, 128, 1, 9) and np.allclose(got, want, atol=1e-5)
    assert not np.allclose(got, small.x[idx], atol=1e-3)
    # no rotation and no gain is the identity: the transform itself adds nothing
    assert np.allclose(har_mod.rotate_and_scale(small.x[idx], np.random.default_rng(0), mean, std, 0, 0),
                       small.x[idx], atol=1e-5)
