"""The generated firmware on the host, over its serial protocol, against TFLite Micro bit for bit."""

import random
import struct
import time

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tinyexit import manifest as mf
from tinyexit.firmware_build import build
from tinyexit.harness import BATCH, ERROR, INFER, INFO, SET_POLICY, SYNC, Device, frame, host_firmware
from tinyexit.policy import NEVER
from tinyexit.reference import all_exit_logits, decide, quantize_input


@pytest.fixture(scope="module")
def har_firmware(har_model, tmp_path_factory):
    return build(har_model[2], "host", tmp_path_factory.mktemp("fw_host"))


@pytest.fixture(scope="module")
def har_reference(har_model, har):
    m = mf.read(har_model[2])
    x = quantize_input(m, har.test.x)
    return m, x, all_exit_logits(m, x)


def test_every_exit_is_bit_exact_with_tflite_micro_on_all_test_windows(har_firmware, har_reference):
    m, x, logits = har_reference
    with host_firmware(har_firmware.binary) as dev:
        for exit_index, thresholds in ((0, {0: 0}), (1, {0: NEVER})):  # force every sample out of one exit
            dev.set_policy(thresholds)
            got = np.stack([dev.infer(x[i]).output for i in range(len(x))])
            assert np.array_equal(got, logits[exit_index]), f"exit {exit_index} differs from TFLite Micro"


def test_exit_decisions_match_the_python_policy(har_firmware, har_reference):
    m, x, logits = har_reference
    threshold = 27000
    expected = decide(m, logits, [threshold, 0])
    assert 0 < (expected.exit == 0).mean() < 1
    with host_firmware(har_firmware.binary) as dev:
        dev.set_policy({0: threshold})
        for i in range(0, len(x), 7):
            r = dev.infer(x[i])
            assert (r.exit, r.predicted_class, r.confidence_q15) == (expected.exit[i], expected.pred[i],
                                                                      expected.confidence_q15[i])
            assert len(r.stage_cycles) == r.exit + 1


@pytest.mark.parametrize("kind", ["margin", "entropy"])
def test_every_policy_kind_decides_as_the_python_policy(har_model, har_reference, tmp_path, kind):
    """The manifest's policy kind is built into the firmware; SET_POLICY still changes its threshold."""
    import shutil

    from tinyexit import policy

    m, x, logits = har_reference
    export = tmp_path / "export"
    shutil.copytree(har_model[2], export)
    manifest = mf.read(export)
    manifest["exits"][0]["policy"] = {"kind": kind, "threshold_q15": 20000, "threshold": 20000 / policy.Q15}
    mf.save(manifest)
    fw = build(export, "host", tmp_path / "fw")
    threshold = int(np.median(policy.exit_scores(manifest["exits"][0], logits[0])[1]))  # about half exit early
    expected = decide(manifest, logits, [threshold, 0])
    assert 0.2 < (expected.exit == 0).mean() < 0.8
    with host_firmware(fw.binary) as dev:
        dev.set_policy({0: threshold})
        for i in range(0, len(x), 5):
            r = dev.infer(x[i])
            assert (r.exit, r.predicted_class, r.confidence_q15) == (expected.exit[i], expected.pred[i],
                                                                      expected.confidence_q15[i]), i


def test_info_and_profile(har_firmware, har_model, har_reference):
    m, x, _ = har_reference
    with host_firmware(har_firmware.binary) as dev:
        info = dev.info()
        assert info["task"] == "har" and info["stages"] == 2 and info["exits"] == 2
        assert info["input_bytes"] == 128 * 9 and info["macs"] == m["cost"]["macs_all_stages"]
        from tinyexit.codegen import model_hash

        assert info["sha256"] == model_hash(m).hex()
        dev.set_policy({0: NEVER})
        p = dev.infer(x[0], profile=True)
        assert len(p.layer_cycles) == info["layers"] == har_firmware.num_layers
        assert all(c > 0 for c in p.layer_cycles)


def test_static_plan_reuses_memory(har_firmware, har_model):
    """The arena is smaller than the sum of all activation tensors: buffers are shared."""
    from tinyexit.tflite_graph import Graph

    m = mf.read(har_model[2])
    total = sum(t.nbytes for s in m["stages"] for t in Graph.load(mf.stage_path(m, s)).tensors if not t.is_constant)
    assert 0 < har_firmware.arena_bytes < total / 2


def _raw(dev: Device, data: bytes):
    dev.link.write(data)
    return dev.read_frame()


def test_protocol_errors_are_answered_and_the_next_frame_works(har_firmware, har_reference):
    _, x, _ = har_reference
    good_input = bytes([1]) + x[0].tobytes()
    with host_firmware(har_firmware.binary) as dev:
        bad_crc = bytearray(frame(INFO))
        bad_crc[-1] ^= 0xFF
        cases = {
            "bad checksum": (bytes(bad_crc), 1),
            "oversized": (bytes([SYNC]) + struct.pack("<BBH", 1, INFER, 0xFFFF), 2),
            "unknown command": (frame(0x42), 3),
            "wrong input size": (frame(INFER, good_input[:-1]), 4),
            "bad version": (frame(INFO, version=9), 5),
            "bad policy": (frame(SET_POLICY, bytes([0, 0xFF, 0xFF])), 7),
            "policy on the final exit": (frame(SET_POLICY, struct.pack("<BH", 1, 100)), 7),
        }
        for name, (data, code) in cases.items():
            command, payload = _raw(dev, b"\x00\x13garbage" + data)  # junk before a frame is skipped
            assert command == ERROR and payload[1] == code, name
            assert dev.info()["task"] == "har", f"no recovery after {name}"
        # a frame cut short: the firmware times out, answers, and serves the next frame
        dev.link.write(frame(INFER, good_input)[:40])
        time.sleep(0.4)
        command, payload = dev.read_frame()
        assert command == ERROR and payload[1] == 6
        assert dev.infer(x[0]).output is not None


def test_batch_runs_samples_from_a_file_as_infer_runs_them(har_firmware, har_reference):
    """BATCH: the samples of the input file from `first` on, each exactly as INFER runs it (outputs, every
    output, exits, profile), records in the result file; bad requests are answered and the link stays usable."""
    _, x, _ = har_reference
    with host_firmware(har_firmware.binary) as dev:
        dev.write_batch_inputs([x[:30]])
        runs = dev.batch(0, 30, with_output=True, all_outputs=True)
        one = [dev.infer(x[i], all_outputs=True) for i in range(30)]
        fields = ("exit", "predicted_class", "confidence_q15")
        assert [[getattr(r, f) for f in fields] for r in runs] == [[getattr(r, f) for f in fields] for r in one]
        assert all(np.array_equal(a.output, b.output) for a, b in zip(runs, one))
        assert all(len(a.outputs) == len(b.outputs) and all(np.array_equal(p, q) for p, q in zip(a.outputs, b.outputs))
                   for a, b in zip(runs, one))
        later = dev.batch(25, 5, with_output=True, profile=True)
        assert [r.exit for r in later] == [r.exit for r in runs[25:]]
        assert all(np.array_equal(a.output, b.output) for a, b in zip(later, runs[25:]))
        assert all(len(r.layer_cycles) == dev.info()["layers"] for r in later)
        names = b"tx_batch_in.bin\0out\0"
        cases = {
            "missing input file": (struct.pack("<BII", 1, 0, 1) + b"absent.bin\0out\0", 9),
            "more samples than the file holds": (struct.pack("<BII", 1, 28, 3) + names, 9),
            "a name outside the working folder": (struct.pack("<BII", 1, 0, 1) + b"../x\0out\0", 7),
            "a hidden name": (struct.pack("<BII", 1, 0, 1) + b"tx_batch_in.bin\0.out\0", 7),
            "an unterminated name": (struct.pack("<BII", 1, 0, 1) + b"tx_batch_in.bin", 7),
            "offload in a batch": (struct.pack("<BII", 4, 0, 1) + names, 7),
            "unknown flags": (struct.pack("<BII", 16, 0, 1) + names, 7),
            "too short": (b"\x01\x00", 7),
        }
        for name, (payload, code) in cases.items():
            command, body = _raw(dev, frame(BATCH, payload))
            assert command == ERROR and list(body) == [BATCH, code], name
            assert dev.info()["task"] == "har", f"no recovery after {name}"


def test_fuzzed_frames_under_address_sanitizer(har_model, tmp_path):
    """10,000 random and mutated frames to an ASan/UBSan build: no crash, no hang, every frame answered."""
    fw = build(har_model[2], "host", tmp_path, sanitize=True)
    rng = random.Random(1234)
    m = mf.read(har_model[2])
    size = m["stages"][0]["inputs"][0]["shape"][1] * 9
    good = [frame(INFO), frame(INFER, bytes([1]) + bytes(size)), frame(SET_POLICY, struct.pack("<BH", 0, 20000)),
            frame(BATCH, struct.pack("<BII", 3, 0, 2) + b"tx_batch_in.bin\0out\0")]
    answered = 0
    with host_firmware(fw.binary, timeout=10) as dev:
        dev.write_batch_inputs([np.zeros((2, size), np.int8)])
        for i in range(10_000):
            base = bytearray(rng.choice(good))
            kind = rng.random()
            if kind < 0.3:  # flip bytes after the sync byte
                for _ in range(rng.randint(1, 4)):
                    base[rng.randrange(1, len(base))] = rng.randrange(256)
            elif kind < 0.5:  # random command and payload, valid checksum
                payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
                base = bytearray(frame(rng.randrange(256), payload))
            elif kind < 0.6:  # declared length beyond any legal frame
                base = bytearray([SYNC]) + struct.pack("<BBH", 1, rng.randrange(256), rng.randint(4000, 65535))
            header_ok = len(base) >= 5 and struct.unpack("<H", base[3:5])[0] == len(base) - 7
            if not header_ok and len(base) > 5 and struct.unpack("<H", base[3:5])[0] < 4000:
                continue  # a length that disagrees with the bytes sent would wait for a timeout: covered above
            dev.link.write(bytes(base))
            dev.read_frame()
            answered += 1
        assert dev.info()["task"] == "har"
    assert answered >= 8_000


def test_build_and_sim_commands(har_model, har_reference, tmp_path):
    m, x, logits = har_reference
    np.save(tmp_path / "x.npy", x[:120])
    np.save(tmp_path / "y.npy", np.argmax(logits[1][:120], axis=1))
    r = run_cli("build", str(har_model[2]), "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert "activation arena" in r.stdout
    r = run_cli("sim", str(har_model[2]), "--inputs", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                "--out", str(tmp_path / "r.npz"), "--json", str(tmp_path / "s.json"), "--build-dir", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    import json

    summary = json.loads((tmp_path / "s.json").read_text())
    results = np.load(tmp_path / "r.npz")
    assert summary["n"] == 120 and sum(summary["exit_histogram"]) == 120
    assert summary["accuracy"] == 1.0  # labels are the final exit's own predictions; no early exit (NEVER)
    assert np.array_equal(results["output"], logits[1][:120])
    assert results["instructions"].dtype == np.int64 and set(results) >= {"pred", "exit", "instructions", "output"}
    np.save(tmp_path / "bad.npy", x[:3, :10])
    assert_one_line_error(run_cli("sim", str(har_model[2]), "--inputs", str(tmp_path / "bad.npy"),
                                  "--build-dir", str(tmp_path / "b")), "int8 values")


@pytest.fixture(scope="module")
def har_qemu_m4(har_model, tmp_path_factory):
    return build(har_model[2], "qemu-m4", tmp_path_factory.mktemp("fw_qemu_m4"))


def test_qemu_m4_is_bit_exact_and_counts_repeat(har_qemu_m4, har_reference):
    """Cortex-M4 (mps2-an386) under QEMU -icount: TFLite Micro's outputs, and repeatable instruction counts."""
    from tinyexit.harness import firmware

    m, x, logits = har_reference
    idx = np.arange(0, len(x), len(x) // 120)[:120]
    with firmware("qemu-m4", har_qemu_m4.binary) as dev:
        info = dev.info()
        assert info["port"] == "qemu-mps2-an386" and info["cycle_unit"] == "instructions"
        for exit_index, thresholds in ((0, {0: 0}), (1, {0: NEVER})):
            dev.set_policy(thresholds)
            runs = [[dev.infer(x[i]) for i in idx[:5]] for _ in range(2)]
            assert [r.stage_cycles for r in runs[0]] == [r.stage_cycles for r in runs[1]]
            assert all(len(r.stage_cycles) == exit_index + 1 and min(r.stage_cycles) > 0 for r in runs[0])
            # SMLAD does 2 MACs per instruction (0.5 per MAC at best), plain C costs tens; garbage counts would not
            per_mac = np.mean([sum(r.stage_cycles) for r in runs[0]]) / m["cost"]["macs_to_exit"][exit_index]
            assert 0.5 < per_mac < 60, per_mac
            got = np.stack([dev.infer(x[i]).output for i in idx])
            assert np.array_equal(got, logits[exit_index][idx])


@pytest.mark.parametrize("target, port", [("qemu-m7", "qemu-mps2-an500"), ("qemu-m55", "qemu-mps3-an547")])
def test_other_emulated_cores_are_bit_exact(target, port, har_model, har_reference, tmp_path):
    from tinyexit.harness import firmware

    m, x, logits = har_reference
    fw = build(har_model[2], target, tmp_path)
    with firmware(target, fw.binary) as dev:
        assert dev.info()["port"] == port
        dev.set_policy({0: NEVER})
        runs = [dev.infer(x[i]) for i in range(30)]
        assert np.array_equal(np.stack([r.output for r in runs]), logits[1][:30])
        assert dev.infer(x[0]).stage_cycles == runs[0].stage_cycles
