import numpy as np
import pytest

from tinyexit.data import kws
from tinyexit.errors import TinyexitError


@pytest.fixture(scope="module")
def speech(datasets):
    from tinyexit.data import load

    return load("kws", str(datasets / "kws" / "speech_commands_v0.02_test.tar.xz"))


def test_twelve_classes_split_by_speaker(speech):
    assert speech.classes[:10] == kws.WORDS and speech.classes[10:] == ["_silence_", "_unknown_"]
    sides = [set(s.groups.tolist()) for s in (speech.train, speech.val, speech.test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    total = len(speech.train) + len(speech.val) + len(speech.test)
    assert total == 4890
    for s in (speech.train, speech.val, speech.test):
        assert s.x.shape[1:] == (49, 10, 1) and set(np.unique(s.y)) == set(range(12))


def test_features_match_what_the_mlperf_reference_model_expects(speech, datasets):
    """The MLPerf Tiny DS-CNN (trained on the full dataset with MLPerf's features) should score close to
    its 90.2% (kws01) on our features of clips it never saw."""
    from tflite_micro.python.tflite_micro import runtime

    model = (datasets / "models" / "mlperf_kws_ref_model_int8.tflite").read_bytes()
    it = runtime.Interpreter.from_bytes(model)
    q = it.get_input_details(0)["quantization_parameters"]
    scale, zero = float(q["scales"][0]), int(q["zero_points"][0])
    x = np.clip(np.round(speech.test.x / scale) + zero, -128, 127).astype(np.int8)
    pred = []
    for i in range(len(x)):
        it.set_input(x[i:i + 1], 0)
        it.invoke()
        pred.append(int(it.get_output(0).argmax()))
    accuracy = float((np.asarray(pred) == speech.test.y).mean())
    assert accuracy >= 0.88, accuracy


def test_augmentation_shifts_and_mixes_noise(speech):
    rng = np.random.default_rng(0)
    idx = np.arange(8)
    augmented = speech.train.augment(idx, rng)
    assert augmented.shape == (8, 49, 10, 1)
    assert not np.allclose(augmented, speech.train.x[idx], atol=1e-3)
    clip = np.zeros((1, kws.RATE), np.float32)
    clip[0, 100] = 1.0
    shifted = kws.shift_and_mix(clip, np.zeros((0, kws.RATE)), np.random.default_rng(1), max_shift=50)
    assert shifted.sum() == 1.0 and abs(int(np.argmax(shifted)) - 100) <= 50


def test_bad_audio_and_paths_are_one_clear_error(tmp_path):
    with pytest.raises(TinyexitError, match="KWS data not found"):
        kws.load_clips(tmp_path / "nowhere")
    (tmp_path / "yes").mkdir()
    (tmp_path / "yes" / "abc_nohash_0.wav").write_bytes(b"RIFF....not really")
    with pytest.raises(TinyexitError, match="yes/abc_nohash_0.wav: not a readable WAV"):
        kws.load_clips(tmp_path)


def test_speaker_ids():
    assert kws.speaker_of("yes", "aa80f517_nohash_0.wav") == "aa80f517"
    assert kws.speaker_of("_unknown_", "wow_aa80f517_nohash_0.wav.wav") == "aa80f517"
    assert kws.speaker_of("_silence_", "788.wav") == "_silence_/788.wav"
