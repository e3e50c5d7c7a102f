"""Batch mode (protocol BATCH: inputs and results through files) gives exactly the per-sample (serial protocol)
results: exits, classes, outputs, every output, instruction counts per stage and per layer (qemu-m4, -icount),
the stack high-water mark; and falls back to one INFER per sample where the firmware cannot run BATCH."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tinyexit import harness, sim
from tinyexit.firmware_build import build
from tinyexit.paths import EXAMPLE_MODEL

needs_qemu = pytest.mark.skipif(not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-g++")),
                                reason="QEMU or the Arm toolchain missing (./setup.sh)")


@pytest.fixture(scope="module")
def kws(datasets):
    """The MLPerf KWS reference model and the first 60 kws01 inputs (as tests/test_firmware_kws.py loads them)."""
    with tarfile.open(datasets / "kws" / "mlperf_kws01.tar.xz") as tar:
        files = {m.name.rsplit("/", 1)[-1]: tar.extractfile(m).read() for m in tar if m.isfile()}
    rows = [r for r in csv.reader(io.StringIO(files["y_labels.csv"].decode())) if r][:60]
    x = np.stack([np.frombuffer(files[r[0]], np.int8).reshape(49, 10, 1) for r in rows])
    return datasets / "models" / "mlperf_kws_ref_model_int8.tflite", x


@pytest.fixture(scope="module")
def kws_host(kws, tmp_path_factory):
    return build(kws[0], "host", tmp_path_factory.mktemp("kws_host"))


def _both(target: str, binary, x, outputs, jobs: int = 1, **kwargs) -> dict:
    return {protocol: sim.run_parallel(target, binary, x, None, target, jobs, progress=False, profile_layers=True,
                                       outputs=outputs, protocol=protocol, **kwargs)
            for protocol in ("batch", "serial")}


def _assert_same(batch: dict, serial: dict, counts: bool = True) -> None:
    timed = {"instructions", "layer_cycles"}  # host builds count nanoseconds: they differ run to run
    assert sorted(batch) == sorted(serial)
    for key in batch:
        if counts or key not in timed:
            assert batch[key].dtype == serial[key].dtype and np.array_equal(batch[key], serial[key]), key


@needs_qemu
def test_batch_equals_serial_on_the_kws_reference_model_on_qemu_m4(kws, tmp_path):
    model, x = kws
    fw = build(model, "qemu-m4", tmp_path)
    got = _both("qemu-m4", fw.binary, x[:40], fw.outputs)
    (batch, summary_batch, after_batch), (serial, summary_serial, after_serial) = got["batch"], got["serial"]
    assert {"output_0", "layer_cycles"} <= set(batch)
    _assert_same(batch, serial)
    assert summary_batch == summary_serial
    assert len(batch["layer_cycles"]) == 13 and batch["layer_cycles"].min() > 0
    assert 0.95 < summary_batch["instructions_per_mac"] < 1.02  # README: 0.986 with the int8-weight DSP kernels
    # the stack high-water mark covers the serial request's frames in both (the no-exit pass's first sample)
    assert after_batch[0]["stack_used"] == after_serial[0]["stack_used"] > 0


def test_batch_equals_serial_on_the_host_with_two_jobs_and_the_fallback(kws, kws_host, monkeypatch, capsys):
    x, fw = kws[1], kws_host
    got = _both("host", fw.binary, x, fw.outputs, jobs=2)
    _assert_same(got["batch"][0], got["serial"][0], counts=False)
    assert "note" not in capsys.readouterr().err

    def old_firmware(self, *args, **kwargs):  # what a build from before BATCH answers
        raise harness.DeviceError(harness.BATCH, 3)

    monkeypatch.setattr(harness.Device, "batch", old_firmware)
    monkeypatch.setattr(sim, "_noted", set())
    fallback, _, _ = sim.run_parallel("host", fw.binary, x[:10], None, "host", 2, progress=False, profile_layers=True,
                                      outputs=fw.outputs)
    _assert_same(fallback, {k: v[:10] for k, v in got["serial"][0].items()}, counts=False)
    err = capsys.readouterr().err
    assert err.count("tinyexit: note: the firmware cannot run BATCH (built before batch mode") == 1, err


def test_a_device_without_files_runs_per_sample(kws, kws_host, monkeypatch):
    """A board (harness.Device with no shared folder, as `tinyexit profile` opens one) never gets BATCH."""
    x, fw = kws[1], kws_host
    sent = []
    monkeypatch.setattr(harness.Device, "batch", lambda self, *a, **k: sent.append(a))
    with harness.firmware("host", fw.binary) as dev:
        dev.files = None
        result, summary = sim.run_samples(dev, x[:5], None, "board", progress=False)
    assert sent == [] and summary["n"] == 5 and len(result["output"]) == 5


class ProcessPool:
    """An executor of other processes: run_shard and its arguments must pickle (as on a cluster)."""

    def map(self, fn, arg_tuples):
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(2) as pool:
            return list(pool.map(fn, *zip(*arg_tuples)))


def test_run_parallel_takes_any_executor(kws, kws_host):
    x, fw = kws[1], kws_host
    here, _, _ = sim.run_parallel("host", fw.binary, x[:12], None, "host", 3, progress=False, outputs=fw.outputs)
    there, _, after = sim.run_parallel("host", fw.binary, x[:12], None, "host", 3, progress=False, outputs=fw.outputs,
                                       executor=ProcessPool())
    _assert_same(here, there, counts=False)
    assert len(after) == 3


@pytest.fixture(scope="module")
def large_two_input_model(tmp_path_factory):
    """Two 96x96x3 inputs (VWW-sized, 55,296 bytes a sample): ADD, average pooling, a dense layer."""
    import keras
    from keras import layers

    from tinyexit.export import convert_int8

    rng = np.random.default_rng(18)
    a, b = keras.Input((96, 96, 3)), keras.Input((96, 96, 3))
    x = layers.AveragePooling2D(8)(layers.Add()([a, b]))
    out = layers.Dense(4)(layers.Flatten()(x))
    calibration = [rng.normal(0, 1, (16, 96, 96, 3)).astype(np.float32) for _ in range(2)]
    path = tmp_path_factory.mktemp("large") / "large.tflite"
    path.write_bytes(convert_int8(keras.Model([a, b], out), calibration))
    samples = [rng.integers(-128, 128, (120, 96, 96, 3)).astype(np.int8) for _ in range(2)]
    return path, samples


@needs_qemu
def test_large_inputs_stream_from_the_file(large_two_input_model, tmp_path):
    """120 samples of 55 kB each (more than the 4 MB of emulated RAM holds at once) through BATCH on qemu-m4: the host's
    outputs; the first ones also per sample over the serial link, with the same counts."""
    model, xs = large_two_input_model
    host = build(model, "host", tmp_path / "host")
    m4 = build(model, "qemu-m4", tmp_path / "m4")
    want, _, _ = sim.run_parallel("host", host.binary, xs, None, "host", 1, progress=False, outputs=host.outputs)
    got, _, _ = sim.run_parallel("qemu-m4", m4.binary, xs, None, "qemu-m4", 1, progress=False, outputs=m4.outputs)
    assert np.array_equal(got["output"], want["output"]) and len(got["output"]) == 120
    assert len({row.tobytes() for row in got["output"]}) > 100  # inputs in order, not one repeated
    first = _both("qemu-m4", m4.binary, [a[:2] for a in xs], m4.outputs)
    _assert_same(first["batch"][0], first["serial"][0])
    assert np.array_equal(first["batch"][0]["instructions"], got["instructions"][:2])


@needs_qemu
def test_sim_protocol_flag_gives_the_same_results_on_a_model_with_exits(tmp_path):
    """`tinyexit sim --protocol batch|serial` on the example (two exits, some samples take each): the same
    per-sample results and the same summary, stack and memory report included."""
    rng = np.random.default_rng(18)
    walks = np.cumsum(rng.integers(-10, 11, (24, 128, 1, 9)), axis=1)
    np.save(tmp_path / "x.npy", walks.clip(-128, 127).astype(np.int8))
    got = {}
    for protocol in ("batch", "serial"):
        proc = run_cli("sim", str(EXAMPLE_MODEL), "--target", "qemu-m4", "--inputs", str(tmp_path / "x.npy"),
                       "--out", str(tmp_path / f"{protocol}.npz"), "--json", str(tmp_path / f"{protocol}.json"),
                       "--build-dir", str(tmp_path / "build"), "--jobs", "1", "--protocol", protocol)
        assert proc.returncode == 0, proc.stderr
        got[protocol] = (dict(np.load(tmp_path / f"{protocol}.npz")),
                         json.loads((tmp_path / f"{protocol}.json").read_text()))
    (batch, summary_batch), (serial, summary_serial) = got["batch"], got["serial"]
    _assert_same(batch, serial)
    assert len(set(batch["exit"].tolist())) == 2  # both exits taken: per-stage counts are compared
    assert summary_batch == summary_serial and summary_batch["stack_bytes"]


def test_sim_protocol_flag_help_and_bad_value():
    proc = run_cli("sim", "--help")
    assert proc.returncode == 0 and "--protocol" in proc.stdout and "serial" in proc.stdout
    assert_one_line_error(run_cli("sim", str(EXAMPLE_MODEL), "--inputs", "x.npy", "--protocol", "bulk"),
                          "--protocol")
