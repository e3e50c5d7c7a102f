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


@pytest.mark.parametrize("kind", [1, 2, 3])
def test_encoded_cuts_are_the_python_codecs_bytes_and_lossless_decodes_exactly(host_fw, example, kind):
    from tinyexit.edge import codec

    m, x, features, _ = example
    zp = m["stages"][0]["outputs"][0]["zero_point"]
    params = codec.Params(kind, zp, 2 if kind > 1 else 0)
    with host_firmware(host_fw.binary) as dev:
        dev.set_policy({0: NEVER})
        dev.set_offload({0: OffloadSetting(True, cut=0, codec=kind, zero_point=zp, shift=params.shift)})
        for i in range(6):
            o = dev.infer(x[i], may_offload=True).offload
            assert (o.cut, o.codec) == (0, kind) and len(o.data) < features.shape[1]
            assert o.data == codec.encode(params, features[i])
            if kind == 1:
                assert np.array_equal(codec.decode(params, o.data, o.values)[0], features[i])


def test_raw_input_cut_survives_the_arena_reusing_the_input(host_fw, example):
    m, x, _, _ = example
    with host_firmware(host_fw.binary) as dev:
        dev.set_policy({0: NEVER})
        dev.set_offload({0: OffloadSetting(True, cut=-1)})
        for i in range(4):
            o = dev.infer(x[i], may_offload=True).offload
            assert (o.cut, o.codec, o.values) == (-1, 0, x[i].size)
            assert o.data == x[i].tobytes()


def test_the_final_exit_offloads_the_raw_input_of_samples_it_scores_low(host_fw, example):
    from tinyexit import policy

    m, x, _, logits = example
    _, final_score = policy.exit_scores(m["exits"][1], logits[1], "max_prob")
    below = int(np.median(final_score))
    with host_firmware(host_fw.binary) as dev:
        dev.set_policy({0: NEVER})
        dev.set_offload({1: OffloadSetting(True, cut=-1, below_q15=below)})
        for i in range(len(x)):
            r = dev.infer(x[i], may_offload=True)
            assert (r.exit, len(r.stage_cycles), r.confidence_q15) == (1, 2, final_score[i])
            assert (r.offload is not None) == (final_score[i] < below), i
            if r.offload is not None:
                assert (r.offload.cut, r.offload.data) == (-1, x[i].tobytes())
                back = dev.resume()  # nothing left to run: the final exit's own answer
                assert (back.exit, back.predicted_class, back.stage_cycles) == (1, r.predicted_class, r.stage_cycles)


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
    entry = lambda *v: struct.pack("<BBbBbBBH", *v, NEVER)  # noqa: E731
    with host_firmware(host_fw.binary) as dev:
        dev.set_policy({0: NEVER})
        dev.set_offload({0: features_setting(m)})
        for payload in (b"", entry(0, 1, 0, 0, 0, 0, 0)[:-1],   # empty, truncated
                        entry(1, 1, 0, 0, 0, 0, 0),              # the final exit can only send the input
                        entry(2, 1, -1, 0, 0, 0, 0),             # no such exit
                        entry(0, 1, 1, 0, 0, 0, 0),              # a cut that is not the exit's stage
                        entry(0, 1, 0, 4, 0, 0, 0),              # no such codec
                        entry(0, 1, 0, 2, 0, 9, 0),              # shift beyond 8
                        entry(0, 2, 0, 0, 0, 0, 0),              # enabled is 0 or 1
                        entry(0, 1, 0, 0, 0, 0, 0)[:-2] + struct.pack("<H", 40000),  # below beyond 32769
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
                payload = bytes(rng.integers(0, 256, 9 * n, dtype=np.uint8))
                if rng.random() < 0.5 and n:  # mostly plausible entries, so some apply
                    payload = struct.pack("<BBbBbBBH", int(rng.integers(2)), 1, int(rng.choice([-1, 0])),
                                          int(rng.integers(4)), int(rng.integers(-128, 128)), int(rng.integers(9)),
                                          int(rng.integers(2)), int(rng.integers(0, 32770)))
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


# ---- links and the offload policy ----

def test_every_board_has_links_with_sources_and_bad_links_are_refused(tmp_path):
    from tinyexit import boards
    from tinyexit.errors import TinyexitError

    for board in boards.all_boards():
        assert board.links, board.name
        for link in board.links:
            assert link.bytes_per_s > 0 and link.energy_uj_per_byte > 0 and len(link.source) > 40
    l4 = boards.load("nucleo-l4r5zi")
    assert l4.link().name == "uart" and l4.link().bytes_per_s == 11520
    # the UART estimate is the board's active power for one byte's time at 115200 8N1
    assert l4.link().energy_uj_per_byte == pytest.approx(l4.energy_uj(l4.clock_hz / 11520), rel=0.01)
    assert boards.load("nano33ble").link().name == "ble"
    with pytest.raises(TinyexitError, match="has no wifi link"):
        l4.link("wifi")
    path = tmp_path / "x.yaml"
    for raw, fragment in (({"lora": {}}, "unknown link 'lora'"), ([1], "links must map"),
                          ({"uart": {"bytes_per_s": 0, "energy_uj_per_byte": 1, "source": "s"}}, "bytes_per_s must be"),
                          ({"uart": {"bytes_per_s": 1, "energy_uj_per_byte": "x", "source": "s"}}, "energy_uj_per_byte"),
                          ({"uart": {"bytes_per_s": 1, "energy_uj_per_byte": 1}}, "source must say"),
                          ({"uart": {"bytes_per_s": 1, "energy_uj_per_byte": 1, "source": "s", "baud": 9}}, "unknown field")):
        with pytest.raises(TinyexitError, match=fragment):
            boards._links(path, raw)


def _synthetic(example, n=300, seed=3, edge_model=False):
    """The example's manifest with random logits, labels the final exit gets right 80% of the time."""
    from tinyexit import offload

    m = example[0]
    rng = np.random.default_rng(seed)
    logits = [rng.integers(-60, 60, (n, 6)).astype(np.int8) for _ in m["exits"]]
    final = np.argmax(logits[1], axis=1)
    y = np.where(rng.random(n) < 0.8, final, rng.integers(0, 6, n))
    size = 1152
    edge = {"runs": "model"} if edge_model else {"runs": "stages", "first_stage": 0}
    cuts = [offload.Cut(-1, size, offload.codec_params(), np.full(n, size), y.copy(), edge, size),
            offload.Cut(0, 512, offload.codec_params(), np.full(n, 512), final, {"runs": "stages", "first_stage": 1},
                        size)]
    return m, logits, y, cuts


def test_offload_choice_is_the_most_accurate_within_both_budgets(example):
    from tinyexit import boards, offload, policy

    m, logits, y, cuts = _synthetic(example)
    board = boards.load("nucleo-l4r5zi")
    link = board.link()
    chosen, device_only = offload.choose(m, logits, y, cuts, [100_000, 200_000], board, link)
    assert chosen.offload_rate <= 0.30 and chosen.bytes_per_sample <= 0.30 * 1152 + 1e-9
    assert chosen.accuracy > device_only.accuracy
    # brute force, written plainly: every threshold, both cuts, each sample decided on its own
    cls0, score0 = policy.exit_scores(m["exits"][0], logits[0])
    final = np.argmax(logits[1], axis=1)
    best = device_only.accuracy
    for t in sorted(set(score0.tolist())) + [policy.NEVER]:
        for c in cuts:
            right = sent = off = 0
            for i in range(len(y)):
                if score0[i] >= t:
                    right += cls0[i] == y[i]
                else:
                    right += c.edge_pred[i] == y[i]
                    sent += c.bytes[i]
                    off += 1
            if off <= 0.30 * len(y) + 1e-9 and sent / len(y) <= 0.30 * 1152 + 1e-9:
                best = max(best, right / len(y))
    assert chosen.accuracy == pytest.approx(best)
    assert final is not None
    # energy: the device's stages plus the link's energy per byte for what it sent
    n_off = round(chosen.offload_rate * len(y))
    assert n_off > 0 and chosen.energy_uj_mean > board.energy_uj(100_000)


def test_final_exit_offload_is_the_most_accurate_within_the_budgets(example):
    """With an edge model, the final exit may send the raw input of what it scores low: brute force over both
    thresholds (exit 0 takes / the final offloads) agrees with the choice."""
    from tinyexit import boards, offload, policy

    m, logits, y, cuts = _synthetic(example, n=160, edge_model=True)
    cuts = cuts[:1]
    board = boards.load("nucleo-l4r5zi")
    chosen, device_only = offload.choose(m, logits, y, cuts, [100_000, 200_000], board, board.link())
    cls0, s0 = policy.exit_scores(m["exits"][0], logits[0])
    cls1, s1 = policy.exit_scores(m["exits"][1], logits[1])
    best = device_only.accuracy
    for t0 in np.unique(np.r_[s0, policy.NEVER]):
        for tf in np.unique(np.r_[s1, policy.NEVER]):
            at0 = s0 >= t0
            sent = ~at0 & (s1 < tf)  # reaches the final exit and scores low there: the edge (always right)
            if sent.mean() <= 0.30 + 1e-12:
                best = max(best, np.mean(np.where(at0, cls0 == y, np.where(sent, True, cls1 == y))))
    assert chosen.accuracy == pytest.approx(best) and chosen.accuracy > device_only.accuracy
    assert chosen.cuts[-1] == 0 and 0 < chosen.final_below <= policy.NEVER and chosen.offload_rate <= 0.30 + 1e-12


def test_a_tight_byte_budget_prefers_the_smaller_cut_or_nothing(example):
    from tinyexit import boards, offload

    m, logits, y, cuts = _synthetic(example)
    board = boards.load("nucleo-l4r5zi")
    tight, _ = offload.choose(m, logits, y, cuts, [100_000, 200_000], board, board.link(), max_bytes_fraction=0.05)
    assert tight.bytes_per_sample <= 0.05 * 1152 + 1e-9
    none, device_only = offload.choose(m, logits, y, cuts, [1, 2], board, board.link(), max_offload_rate=0.0)
    assert none.offload_rate == 0 and none.accuracy == device_only.accuracy


def test_calibrated_offload_section_drives_the_firmware_as_simulated(example, host_fw, tmp_path, datasets):
    """calibrate_offload on HAR's validation windows writes a valid section; the firmware set from it offloads
    exactly the samples the simulation offloads, with the bytes it counted."""
    from tinyexit import manifest as mf
    from tinyexit import offload
    from tinyexit.data import load
    from tinyexit.errors import TinyexitError
    from tinyexit.reference import quantize_input

    export = tmp_path / "export"
    shutil.copytree(EXAMPLE, export)
    m = mf.read(export)
    m["cost"]["instructions"] = {"qemu-m4": {"stage": [144_000.0, 266_000.0], "to_exit": [144_000.0, 410_000.0]}}
    mf.save(m)
    ds = load("har", str(datasets / "har" / "HAPT.tar.xz"))
    x = quantize_input(m, ds.val.x)[:400]
    logits, _ = offload.stage_outputs(m, x)
    y = np.argmax(logits[1], axis=1)  # labels the edge (stage 1 after the cut) always gets right
    section = offload.calibrate_offload(export, x, y, None, progress=False)
    m = mf.read(export)
    assert m["offload"] == section
    v = section["validation"]
    assert v["offload_rate"] <= 0.30 and v["bytes_per_sample"] <= 0.30 * 1152 + 1e-9 and v["accuracy"] >= v["device_only_accuracy"]
    entry = section["exits"][0]
    assert entry["cut"] is not None
    _, score = offload.policy.exit_scores(m["exits"][0], logits[0])
    expected = score < entry["threshold_q15"]
    assert expected.mean() == pytest.approx(v["offload_rate"])
    with host_firmware(host_fw.binary) as dev:
        dev.set_policy({0: entry["threshold_q15"]})
        dev.set_offload({0: offload.setting(m, 0)})
        got = [dev.infer(x[i], may_offload=True).offload for i in range(0, 400, 4)]
    assert [o is not None for o in got] == list(expected[::4])
    cut = next(c for c in section["cuts"] if c["cut"] == entry["cut"])
    assert all(len(o.data) <= max(cut["values"], 1) for o in got if o)
    # the schema refuses a broken section in one sentence
    bad = {k: v for k, v in m.items() if not k.startswith("_")}
    bad["offload"] = {**section, "exits": [{**entry, "cut": 1}, section["exits"][1]]}
    with pytest.raises(TinyexitError, match=r"offload.exits\[0\].cut must be -1"):
        mf.validate(bad)
    bad["offload"] = {**section, "exits": []}
    with pytest.raises(TinyexitError, match="offload.exits must list the exits"):
        mf.validate(bad)
