"""`tinyexit edge run` and `tinyexit bridge` (issue 17.4): firmware instances bridged to the edge service over a
real mosquitto, on the shipped HAR example (host builds: the protocol and the firmware are the same on QEMU,
tests/test_offload.py checks qemu-m4)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tinyexit import manifest as mf
from tinyexit import policy
from tinyexit.paths import PROJECT_ROOT
from tinyexit.reference import all_exit_logits, decide

EXAMPLE = PROJECT_ROOT / "examples" / "har-tiny" / "export"
KEYS = ("task", "n_samples", "device_only_accuracy", "edge_only_accuracy", "cascade_accuracy", "offload_rate",
        "bytes_sent_per_sample", "bytes_always_offload_per_sample", "codec_ratio", "device_energy_uj_mean",
        "device_only_energy_uj_mean", "cache_hit_rate", "fallbacks", "faults_tested", "faults_passed")


@pytest.fixture(scope="module")
def export(tmp_path_factory, har):
    """The example with instruction costs filled in (no QEMU measurement in these tests) and its offload policy
    chosen on HAR's validation windows (no edge model: the edge runs the stage after the cut)."""
    from tinyexit import offload
    from tinyexit.reference import quantize_input

    out = tmp_path_factory.mktemp("edge_run") / "export"
    shutil.copytree(EXAMPLE, out)
    m = mf.read(out)
    m["cost"]["instructions"] = {"qemu-m4": {"stage": [144_000.0, 266_000.0], "to_exit": [144_000.0, 410_000.0]}}
    mf.save(m)
    offload.calibrate_offload(out, quantize_input(m, har.val.x), har.val.y, None, progress=False)
    return out


@pytest.fixture(scope="module")
def test_arrays(export, har, tmp_path_factory):
    from tinyexit.reference import quantize_input

    m = mf.read(export)
    x, y = quantize_input(m, har.test.x)[::29][:80], har.test.y[::29][:80]  # windows from every subject
    d = tmp_path_factory.mktemp("arrays")
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    return x, y, d


def expected_cascade(m, x):
    """The cascade from TFLite Micro's logits: exit 0 at the offload threshold, else the final exit's class (the
    edge runs stage 1 on the lossless cut, so it answers as the device would)."""
    logits = all_exit_logits(m, x)
    t = m["offload"]["exits"][0]["threshold_q15"]
    cascade = decide(m, logits, [t, 0])
    device = decide(m, logits)
    return cascade, device


def test_edge_run_through_a_private_broker_answers_every_sample_as_the_reference(export, test_arrays, tmp_path):
    x, y, d = test_arrays
    out = tmp_path / "run"
    proc = run_cli("edge", "run", str(export), "--devices", "2", "--target", "host", "--inputs", str(d / "x.npy"),
                   "--labels", str(d / "y.npy"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((out / "edge_report.json").read_text())
    assert all(k in rep for k in KEYS) and (out / "edge_accuracy_bytes.png").stat().st_size > 10_000
    m = mf.read(export)
    cascade, device = expected_cascade(m, x)
    assert rep["n_samples"] == len(y) and sum(rep["answers"].values()) == len(y)
    assert rep["device_only_accuracy"] == pytest.approx(np.mean(device.pred == y))
    assert rep["cascade_accuracy"] == pytest.approx(np.mean(cascade.pred == y))
    offloaded = cascade.exit == 1
    assert rep["offload_rate"] == pytest.approx(offloaded.mean()) and 0 < rep["offload_rate"] <= 0.5
    assert rep["fallbacks"] == 0 and rep["answers"]["edge"] + rep["answers"]["cache"] == offloaded.sum()
    assert rep["codec_ratio"]["0"] > 1.5  # the lossless codec on HAR's post-ReLU cut
    assert 0 < rep["bytes_sent_per_sample"] < 512 * rep["offload_rate"]
    assert rep["edge_only_accuracy"] == pytest.approx(np.mean(np.argmax(all_exit_logits(m, x)[1], axis=1) == y))
    assert "cascade" in proc.stdout and "edge_report.json" in proc.stdout
    # the device-side faults (no worker, a refused model, no broker): each sample answered once, by the device
    assert (rep["faults_tested"], rep["faults_passed"]) == (3, 3), rep["faults"]


def test_edge_run_without_an_edge_service_falls_back_on_every_offload(export, test_arrays, tmp_path):
    """A broker with no edge worker: each offloaded sample waits its deadline, then the device answers it itself
    (RESUME): every sample one answer, the device-only classes, the fallbacks counted."""
    from tinyexit.edge.broker import PrivateBroker

    x, y, d = test_arrays
    out = tmp_path / "run"
    with PrivateBroker() as broker:
        proc = run_cli("edge", "run", str(export), "--devices", "1", "--target", "host", "--inputs", str(d / "x.npy"),
                       "--labels", str(d / "y.npy"), "--limit", "30", "--out", str(out), "--broker", broker.url,
                       "--deadline", "0.2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((out / "edge_report.json").read_text())
    cascade, device = expected_cascade(mf.read(export), x[:30])
    assert rep["fallbacks"] == (cascade.exit == 1).sum() > 0
    assert rep["answers"]["edge"] == 0 and sum(rep["answers"].values()) == 30
    # a fallback finishes on the device: the final exit's class, as if nothing had been offloaded
    final = policy.exit_scores(mf.read(export)["exits"][1], all_exit_logits(mf.read(export), x[:30])[1])[0]
    expected = np.where(cascade.exit == 1, final, cascade.pred)
    assert rep["cascade_accuracy"] == pytest.approx(np.mean(expected == y[:30]))
    assert rep["device_energy_uj_mean"] > 0


@pytest.mark.parametrize("args, fragment", [
    (["--split", "test", "--labels", "y.npy"], "--labels goes with --inputs"),
    (["--inputs", "x.npy"], "--inputs needs --labels"),
    (["--split", "test", "--broker", "http://x"], "broker"),
])
def test_edge_run_bad_input_is_one_error_line(export, args, fragment):
    assert_one_line_error(run_cli("edge", "run", str(export), "--target", "host", *args), fragment)


def test_edge_run_help():
    proc = run_cli("edge", "run", "--help")
    assert proc.returncode == 0 and "--devices" in proc.stdout and "edge_report.json" in proc.stdout


def test_bridge_runs_a_board_on_a_serial_url_against_a_running_edge_service(export, test_arrays, tmp_path):
    """The host build's socket:// URL stands in for a board's serial port; the edge service runs beside it."""
    import subprocess

    from tinyexit.edge.run import EdgeService
    from tinyexit.firmware_build import build

    x, y, d = test_arrays
    fw = build(export, "host", tmp_path / "fw")
    board = subprocess.Popen([str(fw.binary), "--port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        port = int(board.stderr.readline().split()[1])
        with EdgeService(export, None, f"sqlite:{tmp_path / 'cache.sqlite'}", "bridgetest", 1) as url:
            proc = run_cli("bridge", str(export), "--port", f"socket://127.0.0.1:{port}", "--inputs",
                           str(d / "x.npy"), "--labels", str(d / "y.npy"), "--broker", url, "--fleet", "bridgetest",
                           "--out", str(tmp_path / "out"))
    finally:
        board.kill()
        board.wait()
        board.stderr.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((tmp_path / "out" / "edge_report.json").read_text())
    cascade, device = expected_cascade(mf.read(export), x)
    assert rep["cascade_accuracy"] == pytest.approx(np.mean(cascade.pred == y))
    assert rep["answers"]["edge"] + rep["answers"]["cache"] == (cascade.exit == 1).sum() > 0
    assert rep["fallbacks"] == 0 and "cascade" in proc.stdout


def test_bridge_errors_are_one_line(export, test_arrays):
    x, y, d = test_arrays
    common = ["--inputs", str(d / "x.npy"), "--labels", str(d / "y.npy")]
    assert_one_line_error(run_cli("bridge", str(export), "--port", "socket://127.0.0.1:9", "--broker",
                                  "mqtt://127.0.0.1:1", *common), "unreachable")
    assert_one_line_error(run_cli("bridge", str(EXAMPLE), "--port", "loop://", "--broker", "mqtt://127.0.0.1:1",
                                  *common), "no offload policy")
    proc = run_cli("bridge", "--help")
    assert proc.returncode == 0 and "--port" in proc.stdout
