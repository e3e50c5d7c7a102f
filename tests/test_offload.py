"""Device->edge offload (issue 17.1): SET_OFFLOAD, the offloaded INFER reply, RESUME, and the offload policy.

The firmware side runs the shipped HAR example (two stages, cut = 64 x 8 post-ReLU features, input 1,152 B) on
the host and on qemu-m4; the cut it sends must equal TFLite Micro's stage output bit for bit."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest

from tinyexit import manifest as mf
from tinyexit.firmware_build import build
from tinyexit.harness import (ERROR, INFER, INFO, RESUME, SET_OFFLOAD, Device, DeviceError, OffloadSetting, firmware, frame,
                              host_firmware)
from tinyexit.paths import PROJECT_ROOT
from tinyexit.policy import NEVER
from tinyexit.reference import decide, load_stages

EXAMPLE = PROJECT_ROOT / "examples" / "har-tiny" / "export"


@pytest.fixture(scope="module")
def example():
    m = mf.read(EXAMPLE)
    rng = np.random.default_rng(17)
    x = rng.integers(-128, 128, size=(24, *m["input"]["shape"][1:]), dtype=np.int8)
    stages = load_stages(m)
    features, logits = [], [[], []]
    for v in x:
        f, l0 = stages[0](v[None])
        (l1,) = stages[1](f)
        features.append(f.reshape(-1))
        logits[0].append(l0.reshape(-1))
        logits[1].append(l1.reshape(-1))
    return m, x, np.stack(features), [np.stack(v) for v in logits]


@pytest.fixture(scope="module")
def host_fw(tmp_path_factory):
    """Under AddressSanitizer/UBSan: every host test here also checks the new paths touch no wrong byte."""
    return build(EXAMPLE, "host", tmp_path_factory.mktemp("offload_host"), sanitize=True)


def features_setting(m, codec=0) -> OffloadSetting:
    return OffloadSetting(True, cut=0, codec=codec, zero_point=m["stages"][0]["outputs"][0]["zero_point"])


def test_offloaded_cut_is_tflite_micros_stage_output_and_resume_finishes_on_the_device(host_fw, example):
    m, x, features, logits = example
    with host_firmware(host_fw.binary) as dev:
        dev.set_policy({0: NEVER})  # exit 0 is never confident: every sample offloads there
        dev.set_offload({0: features_setting(m)})
        for i in range(len(x)):
            r = dev.infer(x[i], may_offload=True)
            assert (r.exit, len(r.stage_cycles)) == (0, 1), "stopped at the offloading exit"
            assert np.array_equal(r.output, logits[0][i])
            o = r.offload
            assert (o.cut, o.codec, o.values) == (0, 0, features.shape[1])
            assert np.array_equal(np.frombuffer(o.data, np.int8), features[i]), f"cut of sample {i} differs"
            assert 0 <= o.encode_cycles <= r.stage_cycles[0]
            back = dev.resume()  # the edge did not answer: the device's own final exit
            assert back.offload is None and back.exit == 1 and back.stage_cycles[0] == r.stage_cycles[0]
            assert np.array_equal(back.output, logits[1][i])
        plain = dev.infer(x[0])  # without may_offload the same setting runs every stage
        assert plain.offload is None and plain.exit == 1


def test_raw_input_cut_survives_the_arena_reusing_the_input(host_fw, example):
    m, x, _, _ = example
    with host_firmware(host_fw.binary) as dev:
        dev.set_policy({0: NEVER})
        dev.set_offload({0: OffloadSetting(True, cut=-1)})
        for i in range(4):
            o = dev.infer(x[i], may_offload=True).offload
            assert (o.cut, o.codec, o.values) == (-1, 0, x[i].size)
            assert o.data == x[i].tobytes()


def test_only_samples_the_exit_is_not_confident_of_are_offloaded(host_fw, example):
    m, x, features, logits = example
    at_exit_0 = decide(m, logits, [0, 0])  # every sample's class and score at exit 0
    threshold = int(np.median(at_exit_0.confidence_q15))  # about half leave there
    expected = decide(m, logits, [threshold, 0])
    assert 0 < (expected.exit == 0).sum() < len(x)
    with host_firmware(host_fw.binary) as dev:
        dev.set_policy({0: threshold})
        dev.set_offload({0: features_setting(m)})
        for i in range(len(x)):
            r = dev.infer(x[i], may_offload=True)
            assert r.exit == 0 and len(r.stage_cycles) == 1
            assert (r.offload is None) == (expected.exit[i] == 0), i
            assert (r.predicted_class, r.confidence_q15) == (at_exit_0.pred[i], at_exit_0.confidence_q15[i])
        dev.set_offload({0: OffloadSetting(False)})
        assert all(dev.infer(x[i], may_offload=True).offload is None for i in range(6))


def _error(dev: Device, command: int, payload: bytes) -> int:
    dev.link.write(frame(command, payload))
    reply, body = dev.read_frame()
    assert reply == ERROR and body[0] == command
    return body[1]


def test_bad_offload_settings_and_resume_without_an_offload_are_refused(host_fw, example):
    m, x, features, _ = example
    entry = lambda *v: struct.pack("<BBbBbBB", *v)  # noqa: E731
    with host_firmware(host_fw.binary) as dev:
        dev.set_policy({0: NEVER})
        dev.set_offload({0: features_setting(m)})
        for payload in (b"", entry(0, 1, 0, 0, 0, 0, 0)[:-1],   # empty, truncated
                        entry(1, 1, -1, 0, 0, 0, 0),             # the final exit always answers
                        entry(2, 1, -1, 0, 0, 0, 0),             # no such exit
                        entry(0, 1, 1, 0, 0, 0, 0),              # a cut that is not the exit's stage
                        entry(0, 1, 0, 4, 0, 0, 0),              # no such codec
                        entry(0, 1, 0, 2, 0, 9, 0),              # shift beyond 8
                        entry(0, 2, 0, 0, 0, 0, 0),              # enabled is 0 or 1
                        entry(0, 0, 0, 0, 0, 0, 0) + entry(1, 1, 0, 0, 0, 0, 0)):  # one bad entry: none applies
            assert _error(dev, SET_OFFLOAD, payload) == 7, payload.hex()
        r = dev.infer(x[0], may_offload=True)  # the earlier good setting still holds
        assert np.array_equal(np.frombuffer(r.offload.data, np.int8), features[0])
        dev.infer(x[1])  # another inference ran since: nothing to resume
        with pytest.raises(DeviceError) as err:
            dev.resume()
        assert err.value.code == 7


def test_fuzzed_offload_frames_are_all_answered(host_fw, example):
    """Random SET_OFFLOAD / INFER (with any flags) / RESUME frames: no crash, no hang, each one answered."""
    m, x, _, _ = example
    rng = np.random.default_rng(5)
    with host_firmware(host_fw.binary, timeout=10) as dev:
        for i in range(600):
            pick = rng.integers(3)
            if pick == 0:
                n = int(rng.integers(0, 4))
                payload = bytes(rng.integers(0, 256, 7 * n, dtype=np.uint8))
                if rng.random() < 0.5 and n:  # mostly plausible entries, so some apply
                    payload = struct.pack("<BBbBbBB", 0, 1, int(rng.choice([-1, 0])), int(rng.integers(4)),
                                          int(rng.integers(-128, 128)), int(rng.integers(9)), int(rng.integers(2)))
                dev.link.write(frame(SET_OFFLOAD, payload))
            elif pick == 1:
                dev.link.write(frame(INFER, bytes([int(rng.integers(256))]) + x[i % len(x)].tobytes()))
            else:
                dev.link.write(frame(RESUME, bytes(rng.integers(0, 256, int(rng.integers(0, 3)), dtype=np.uint8))))
            dev.read_frame()
        assert dev.info()["task"] == "har"


def test_a_version_2_host_gets_the_version_error(host_fw):
    with host_firmware(host_fw.binary) as dev:
        dev.link.write(frame(INFO, version=2))
        reply, body = dev.read_frame()
        assert (reply, body[1]) == (ERROR, 5)
        assert dev.info()["version"] == 3


def test_encoding_that_is_not_smaller_sends_the_raw_input(host_fw, example):
    """Random inputs do not compress: a lossless-coded input is larger than the input, so the input goes raw."""
    m, x, _, _ = example
    with host_firmware(host_fw.binary) as dev:
        dev.set_policy({0: NEVER})
        dev.set_offload({0: OffloadSetting(True, cut=-1, codec=1, zero_point=m["input"]["zero_point"])})
        o = dev.infer(x[0], may_offload=True).offload
        assert (o.cut, o.codec, o.data) == (-1, 0, x[0].tobytes())


def test_qemu_m4_offload_is_bit_exact_and_counts_the_encoding(example, tmp_path):
    if shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-g++") is None:
        pytest.fail("the ARM toolchain and QEMU are part of the set-up (./setup.sh)")
    m, x, features, logits = example
    fw = build(EXAMPLE, "qemu-m4", tmp_path / "fw")
    with firmware("qemu-m4", fw.binary) as dev:
        dev.set_policy({0: NEVER})
        plain = [dev.infer(x[i], with_output=False).stage_cycles for i in range(3)]
        dev.set_offload({0: features_setting(m)})
        for i in range(3):
            r = dev.infer(x[i], may_offload=True)
            again = dev.infer(x[i], may_offload=True)
            assert np.array_equal(np.frombuffer(r.offload.data, np.int8), features[i])
            assert r.stage_cycles == again.stage_cycles, "instruction counts repeat"
            # a raw copy of 512 bytes costs instructions, and they are in the stage's count
            assert r.offload.encode_cycles > 0
            assert r.stage_cycles[0] >= plain[i][0] + r.offload.encode_cycles - 40
            back = dev.resume()
            assert np.array_equal(back.output, logits[1][i]) and back.stage_cycles[1] == plain[i][1]
