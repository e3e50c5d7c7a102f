"""The firmware on a Dask cluster (`--cluster`): a local cluster of worker processes gives the results of one
local job (sim on host and qemu-m4; instruction pricing for placement and calibration), and an unreachable
scheduler, a worker without QEMU or a missing Dask end in one error line."""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tinyexit.paths import EXAMPLE_MODEL

needs_qemu = pytest.mark.skipif(not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-g++")),
                                reason="QEMU or the Arm toolchain missing (./setup.sh)")


@pytest.fixture(scope="module")
def scheduler():
    """A Dask scheduler with 3 worker processes (one thread each), as a user's cluster would be."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def walks(tmp_path_factory) -> Path:
    """24 sensor-like int8 windows for the HAR example (random walks: some leave early, some do not)."""
    rng = np.random.default_rng(18)
    path = tmp_path_factory.mktemp("inputs") / "x.npy"
    np.save(path, np.cumsum(rng.integers(-10, 11, (24, 128, 1, 9)), axis=1).clip(-128, 127).astype(np.int8))
    return path


def _sim(folder: Path, x: Path, target: str, name: str, *pool: str) -> tuple[dict, dict]:
    proc = run_cli("sim", str(EXAMPLE_MODEL), "--target", target, "--inputs", str(x), "--out",
                   str(folder / f"{name}.npz"), "--json", str(folder / f"{name}.json"),
                   "--build-dir", str(folder / "build"), *pool)
    assert proc.returncode == 0, proc.stderr
    return dict(np.load(folder / f"{name}.npz")), json.loads((folder / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def one_job(tmp_path_factory, walks):
    """sim's results with one local job, per target (run once, compared with every pooled run)."""
    done = {}

    def get(target: str):
        if target not in done:
            done[target] = _sim(tmp_path_factory.mktemp(f"one-{target}"), walks, target, "one", "--jobs", "1")
        return done[target]

    return get


@pytest.mark.parametrize("target", ["host", pytest.param("qemu-m4", marks=needs_qemu)])
def test_sim_on_a_cluster_gives_the_results_of_one_job(tmp_path, walks, scheduler, one_job, target):
    """Shards on 3 worker processes (the binary shipped as bytes, not as a path), merged in input order:
    exits, classes, outputs, instruction counts (qemu-m4) and the summary equal one local job's."""
    one, summary_one = one_job(target)
    pooled, summary_pooled = _sim(tmp_path, walks, target, "pooled", "--cluster", scheduler)
    assert sorted(one) == sorted(pooled) == ["exit", "instructions", "output", "pred"]
    assert len({row.tobytes() for row in one["output"]}) == 24  # each sample's output its own: order is checked
    for key in ("exit", "pred", "output"):
        assert np.array_equal(one[key], pooled[key]), key
    if target == "host":  # nanoseconds: only the clock's unit and the shape can agree
        assert summary_one["cycle_unit"] == "host-ns" and one["instructions"].shape == pooled["instructions"].shape
        assert summary_one["exit_histogram"] == summary_pooled["exit_histogram"]
    else:
        assert np.array_equal(one["instructions"], pooled["instructions"])
        assert summary_one == summary_pooled


def test_local_executor_keeps_the_order():
    """Local threads return each call's result at its own place, however the calls interleave."""
    from tinyexit.cluster import LocalExecutor

    def late_first(k: int, delay: float) -> int:
        time.sleep(delay)
        return k * k

    calls = [(k, 0.05 * (5 - k)) for k in range(6)]
    assert LocalExecutor(3).map(late_first, calls) == [k * k for k in range(6)]


def _serial_counts(model: Path, x_q: np.ndarray, samples: int, tmp: Path) -> list[float]:
    """Each stage's mean count the way it was measured before the pool: one firmware, one INFER at a time."""
    from tinyexit import manifest as mf
    from tinyexit.firmware_build import build
    from tinyexit.harness import firmware
    from tinyexit.policy import NEVER

    fw = build(model, "qemu-m4", tmp)
    early = {e["index"]: NEVER for e in mf.read(model)["exits"] if not e["final"]} if model.is_dir() else {}
    with firmware("qemu-m4", fw.binary) as dev:
        if early:
            dev.set_policy(early)
        runs = [dev.infer(x_q[i], with_output=False).stage_cycles for i in range(samples)]
    return np.mean(runs, axis=0).round(1).tolist()


@needs_qemu
def test_pricing_through_the_pool_equals_the_serial_measurement(tmp_path, walks):
    """Placement prices several models side by side (measure_many): on a cluster of 2 worker processes
    started here (`--cluster local:2`) each model's counts are those measured one at a time over the
    serial protocol, in the order given."""
    from tinyexit.cluster import DaskExecutor
    from tinyexit.measure import measure_many

    x = np.load(walks)
    models = [(EXAMPLE_MODEL, x[3:]), (EXAMPLE_MODEL / "model_int8.tflite", x)]
    with DaskExecutor("local:2") as pool:
        assert pool.workers == 2
        pooled = measure_many(models, "qemu-m4", samples=4, executor=pool)
    serial = [_serial_counts(path, x_q, 4, tmp_path / str(k)) for k, (path, x_q) in enumerate(models)]
    assert [c["stage"] for c in pooled] == serial
    assert [len(s) for s in serial] == [2, 1] and all(c["samples"] == 4 and c["unit"] == "instructions"
                                                       for c in pooled)


@needs_qemu
def test_calibration_measures_through_the_pool(tmp_path, walks, scheduler):
    """`calibrate --target` measured on the cluster writes the counts and the policy a local run writes."""
    from tinyexit import manifest as mf
    from tinyexit import pipeline
    from tinyexit.calibrate import parse_target
    from tinyexit.cluster import DaskExecutor

    x = np.load(walks)
    y = np.arange(len(x)) % 6
    written = {}
    for name in ("local", "cluster"):
        export = tmp_path / name
        shutil.copytree(EXAMPLE_MODEL, export)
        if name == "cluster":
            with DaskExecutor(scheduler) as pool:
                pipeline.calibrate_target(export, None, parse_target("accuracy-drop=5pp"), progress=False,
                                          arrays=(x, y), executor=pool)
        else:
            pipeline.calibrate_target(export, None, parse_target("accuracy-drop=5pp"), progress=False, arrays=(x, y))
        m = mf.read(export)
        written[name] = (m["cost"]["instructions"]["qemu-m4"], [e["policy"] for e in m["exits"]])
    assert written["local"] == written["cluster"]
    assert written["local"][0]["samples"] == 20


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_error_line_within_seconds(walks):
    start = time.monotonic()
    proc = run_cli("sim", str(EXAMPLE_MODEL), "--inputs", str(walks), "--cluster", f"tcp://127.0.0.1:{_closed_port()}")
    assert_one_line_error(proc, "--cluster", "no Dask scheduler answered")
    assert time.monotonic() - start < 30  # a refused connection does not wait for the timeout


def test_bad_cluster_address_and_flags():
    assert_one_line_error(run_cli("sim", str(EXAMPLE_MODEL), "--inputs", "x.npy", "--cluster", "somewhere"),
                          "--cluster", "tcp://HOST:PORT")
    assert_one_line_error(run_cli("sim", str(EXAMPLE_MODEL), "--inputs", "x.npy", "--cluster", "local:0"), "--cluster")
    assert_one_line_error(run_cli("calibrate", str(EXAMPLE_MODEL), "--cluster", "local:1"), "--cluster go with --target")
    assert "--cluster ADDRESS" in run_cli("sim", "--help").stdout
    from tinyexit.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.choices and "place" in a.choices).choices
    for command in ("place", "calibrate", "demo"):
        assert "--cluster ADDRESS" in sub[command].format_help(), command


def test_missing_dask_is_one_error_line(tmp_path, walks):
    """Without the `distributed` package --cluster says how to install it."""
    (tmp_path / "distributed").mkdir()
    (tmp_path / "distributed" / "__init__.py").write_text("raise ImportError('no Dask here')\n")
    import os

    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    proc = run_cli("sim", str(EXAMPLE_MODEL), "--inputs", str(walks), "--cluster", "local:1",
                   env={"PYTHONPATH": path})
    assert_one_line_error(proc, "--cluster needs Dask", "pip install")


@needs_qemu
def test_worker_without_qemu_names_the_worker(tmp_path, walks):
    """A worker whose PATH has no qemu-system-arm: one error naming that worker, raised on the client."""
    distributed = pytest.importorskip("distributed")
    from tinyexit.cluster import DaskExecutor
    from tinyexit.errors import TinyexitError
    from tinyexit.measure import measure_instructions

    (tmp_path / "empty").mkdir()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  env={"PATH": str(tmp_path / "empty")}, silence_logs=50) as c, \
            DaskExecutor(c.scheduler_address) as pool:
        with pytest.raises(TinyexitError, match=r"^worker tcp://\S+: qemu-system-arm not found"):
            measure_instructions(EXAMPLE_MODEL, "qemu-m4", np.load(walks), samples=1, executor=pool)


def test_shipped_binary_is_written_once_per_content(tmp_path):
    """A worker writes a shipped file under its content hash: the same bytes again reuse it (no rewrite per
    shard), other bytes get their own folder, and an executable stays executable."""
    import os

    from tinyexit.cluster import ShippedFile

    binary = tmp_path / "firmware"
    binary.write_bytes(b"\x7fELF one")
    binary.chmod(0o755)
    first = ShippedFile.of(binary).materialise(tmp_path / "worker")
    stamp = first.stat().st_mtime_ns
    time.sleep(0.01)
    again = ShippedFile.of(binary).materialise(tmp_path / "worker")
    binary.write_bytes(b"\x7fELF two")
    other = ShippedFile.of(binary).materialise(tmp_path / "worker")
    assert again == first and again.stat().st_mtime_ns == stamp and first.read_bytes() == b"\x7fELF one"
    assert other != first and other.read_bytes() == b"\x7fELF two" and other.name == "firmware"
    assert os.access(first, os.X_OK)


def test_workers_of_another_tinyexit_are_refused(scheduler, monkeypatch):
    """The shards are tinyexit's functions sent by name: a worker of another version is named, before any run."""
    import tinyexit
    from tinyexit.cluster import DaskExecutor
    from tinyexit.errors import TinyexitError

    installed = tinyexit.__version__  # what the worker processes import
    monkeypatch.setattr(tinyexit, "__version__", "0.0.0-client")
    refused = rf"another tinyexit than this 0\.0\.0-client: tcp://\S+ \({re.escape(installed)}\)"
    with pytest.raises(TinyexitError, match=refused):
        DaskExecutor(scheduler)
