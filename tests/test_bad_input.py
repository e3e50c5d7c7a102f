"""Bad input of every kind, run as users run it (a process each): exactly one `tinyexit: error:` line and exit
code 2, no traceback, no accepted-but-wrong result, no half-written file. Plus property tests of the two readers
(manifest.json and .tflite): whatever the damage, a TinyexitError or a sound result, never another exception.

One small HAR export (the session's `har_model`) serves every test; cheap argument checks come first.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tinyexit import atomic
from tinyexit import manifest as mf
from tinyexit.errors import TinyexitError
from tinyexit.tflite_graph import Graph, serialize


def assert_error_before_work(proc, *fragments):
    """The one-line error, and nothing on stdout: the command stopped before its work began."""
    assert_one_line_error(proc, *fragments)
    assert proc.returncode == 2
    assert proc.stdout.strip() == "", proc.stdout


# ---- numeric flags: range-checked while the arguments are parsed ----

@pytest.mark.parametrize("args, flag", [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "-1"], "--epochs"),
    (["train", "--early-exit-weight", "nan"], "--early-exit-weight"),
    (["train", "--exits-after", "0"], "--exits-after"),
    (["train", "--seed", "-3"], "--seed"),
    (["place", "--head-epochs", "0"], "--head-epochs"),
    (["calibrate", "EXPORT", "--margin-sigma", "-1"], "--margin-sigma"),
    (["calibrate", "EXPORT", "--budget-pp", "-5"], "--budget-pp"),
    (["calibrate", "EXPORT", "--budget-pp", "nan"], "--budget-pp"),
    (["calibrate", "EXPORT", "--budget-pp", "101"], "--budget-pp"),
    (["quantize", "EXPORT", "--flash-kb", "nan"], "--flash-kb"),
    (["quantize", "EXPORT", "--flash-kb", "-4"], "--flash-kb"),
    (["demo", "--firmware-samples", "-1"], "--firmware-samples"),
    (["demo", "--agreement-samples", "0"], "--agreement-samples"),
    (["demo", "--budget-pp", "inf"], "--budget-pp"),
    (["retrofit", "m.h5", "--epochs", "x"], "--epochs"),
    (["profile", "EXPORT", "--port", "loop://", "--inputs", "X.npy", "--timeout", "0"], "--timeout"),
    (["inputs", "EXPORT", "--split", "test", "--limit", "0"], "--limit"),
])
def test_numeric_flags_are_range_checked_before_any_work(args, flag, tmp_path):
    proc = run_cli(*[str(tmp_path) if a == "EXPORT" else a for a in args])
    assert_error_before_work(proc, flag, "must be")


def test_unknown_arguments_are_one_line_too():
    assert_one_line_error(run_cli("evaluate"), "evaluate:", "required")
    assert_one_line_error(run_cli("nosuch"), "invalid choice")


# ---- the manifest: validated against its schema on every read ----

def mutations():
    """(what, change, fragment of the error): hand edits and damage of the field report, each must be refused."""
    def drop(*keys):
        def f(m):
            d = m
            for k in keys[:-1]:
                d = d[k]
            del d[keys[-1]]
        return f

    def put(value, *keys):
        def f(m):
            d = m
            for k in keys[:-1]:
                d = d[k]
            d[keys[-1]] = value
        return f

    return [
        ("input is missing", drop("input"), "input is missing"),
        ("cost is missing", drop("cost"), "cost is missing"),
        ("threshold as a string", put("high", "exits", 0, "policy", "threshold_q15"), "exits[0].policy.threshold_q15"),
        ("threshold out of range", put(40000, "exits", 0, "policy", "threshold_q15"), "threshold_q15"),
        ("unknown policy kind", put("vote", "exits", 0, "policy", "kind"), "exits[0].policy.kind"),
        ("swapped stages", lambda m: m.__setitem__("stages", m["stages"][::-1]), "stages[0].index"),
        ("empty stages", put([], "stages"), "stages must have at least 1"),
        ("output index out of range", put(7, "exits", 0, "output"), "exits[0].output"),
        ("exit on the features output", put(0, "exits", 0, "output"), "logits"),
        ("wrong exit classes", put(5, "exits", 1, "classes"), "exits[1].classes"),
        ("wrong class list", lambda m: m.__setitem__("classes", m["classes"][:4]), "classes lists 4"),
        ("no final exit", put(False, "exits", 1, "final"), "exits[1].final"),
        ("two final exits", put(True, "exits", 0, "final"), "exits[0].final"),
        ("NaN input scale", put(float("nan"), "input", "scale"), "input.scale"),
        ("broken stage chain", put(3, "stages", 1, "inputs", 0, "zero_point"), "stages[1].inputs"),
        ("stage file outside the folder", put("../stage_0.tflite", "stages", 0, "file"), "stages[0].file"),
        ("threshold and q15 disagree", put(0.5, "exits", 0, "policy", "threshold"), "disagree"),
        ("exit with no stage", lambda m: m["exits"].append(copy.deepcopy(m["exits"][1])), "one exit per stage"),
        ("costs not the stages'", put([1, 2], "cost", "macs_to_exit"), "cost.macs_to_exit"),
        ("bool for an integer", put(True, "exits", 0, "stage"), "exits[0].stage"),
    ]


@pytest.fixture(scope="module")
def export(har_model):
    return har_model[2]


@pytest.fixture(scope="module")
def base_manifest(export) -> dict:
    return json.loads((export / "manifest.json").read_text())


MUTATIONS = mutations()


@pytest.mark.parametrize("case", range(len(MUTATIONS)), ids=[m[0].replace(" ", "-") for m in MUTATIONS])
def test_every_damaged_manifest_is_one_error_line(case, export, base_manifest, tmp_path):
    what, change, fragment = MUTATIONS[case]
    copy_dir = tmp_path / "export"
    shutil.copytree(export, copy_dir)
    m = copy.deepcopy(base_manifest)
    change(m)
    (copy_dir / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(TinyexitError) as err:
        mf.read(copy_dir)
    assert fragment in str(err.value), (what, str(err.value))
    # the commands that read manifests, as processes (build, evaluate and calibrate took 27 tracebacks)
    command = ["build", "evaluate", "calibrate"][case % 3]
    proc = run_cli(command, str(copy_dir), *(["--out", str(tmp_path / "b")] if command == "build" else []))
    assert_error_before_work(proc, "manifest.json", fragment)


def _rewrite_hash(export_dir: Path, stage: int) -> None:
    m = json.loads((export_dir / "manifest.json").read_text())
    m["stages"][stage]["sha256"] = mf.sha256_file(export_dir / m["stages"][stage]["file"])
    (export_dir / "manifest.json").write_text(json.dumps(m))


def _damaged_stage_files(export_dir: Path) -> dict[str, bytes]:
    """A stage file damaged three ways that the field report saw get past the hash (the manifest rewritten)."""
    buf = (export_dir / "stage_0.tflite").read_bytes()
    g = Graph(buf)
    damaged = {}
    model = Graph(buf).model
    model.subgraphs[0].tensors[1].name = b"\xff\xfebroken"  # not UTF-8
    damaged["name"] = serialize(model)
    model = Graph(buf).model
    activation = next(i for i, t in enumerate(g.tensors) if t.scale is not None and not t.is_constant)
    model.subgraphs[0].tensors[activation].quantization.scale[0] = float("nan")
    damaged["scale"] = serialize(model)
    model = Graph(buf).model  # a constant tensor whose shape no longer matches its data
    const = next(t for t in g.tensors if t.is_constant and len(t.shape) > 1)
    model.subgraphs[0].tensors[const.index].shape[(const.quantized_dimension + 1) % len(const.shape)] += 1
    damaged["reshape"] = serialize(model)
    return damaged


@pytest.mark.parametrize("damage, fragment", [("name", "not UTF-8"), ("scale", "not a finite number"),
                                              ("reshape", "bytes, its shape")])
def test_a_damaged_stage_file_behind_a_rewritten_hash_is_one_error_line(damage, fragment, export, tmp_path):
    copy_dir = tmp_path / "export"
    shutil.copytree(export, copy_dir)
    (copy_dir / "stage_0.tflite").write_bytes(_damaged_stage_files(export)[damage])
    _rewrite_hash(copy_dir, 0)
    for command in (["build", str(copy_dir), "--out", str(tmp_path / "b")], ["evaluate", str(copy_dir)]):
        assert_error_before_work(run_cli(*command), "stage_0.tflite", fragment)
    assert not (tmp_path / "b" / "model.cc").exists()


def test_the_manifest_must_describe_its_stage_files(export, base_manifest, tmp_path):
    """Both the manifest and the file changed consistently with the hash, but not with each other."""
    copy_dir = tmp_path / "export"
    shutil.copytree(export, copy_dir)
    m = copy.deepcopy(base_manifest)
    m["stages"][0]["outputs"][1]["scale"] *= 2  # the exit's logits scale, wherever it is quoted
    m["exits"][0]["logit_scale"] = m["stages"][0]["outputs"][1]["scale"]
    (copy_dir / "manifest.json").write_text(json.dumps(m))
    assert_error_before_work(run_cli("evaluate", str(copy_dir)), "stages[0].outputs do not describe stage_0.tflite")


# ---- inputs (X.npy, y.npy) against the model ----

@pytest.fixture(scope="module")
def arrays(export, har, tmp_path_factory):
    """Int8 test inputs and labels as `tinyexit inputs` makes them, and bad variants of both."""
    from tinyexit.reference import quantize_input

    d = tmp_path_factory.mktemp("arrays")
    split = har.test.subset(120, 0)
    x = quantize_input(mf.read(export), split.x)
    files = {
        "X": x, "y": split.y, "X_flat": x.reshape(len(x), -1), "X_transposed": np.ascontiguousarray(x.transpose(0, 3, 2, 1)),
        "X_float": split.x, "y_float": split.y.astype(np.float64), "y_big": split.y + 6, "y_negative": split.y - 1,
        "y_short": split.y[:-1], "X_empty": x[:0],
    }
    for name, a in files.items():
        np.save(d / f"{name}.npy", a)
    np.savez(d / "X.npz", x=x)
    (d / "junk.npy").write_text("these are not the inputs you are looking for")
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return d


@pytest.mark.parametrize("inputs, labels, fragment", [
    ("X_transposed", None, "the inputs have shape (120, 9, 1, 128); the model takes 1152 int8 values per sample, "
                          "as (N, 128, 1, 9)"),
    ("X.npz", None, "a .npz archive"),
    ("junk", None, "not a .npy file"),
    ("objects", None, "cannot read it as .npy"),
    ("X_float", None, "the inputs are float32, the model takes int8"),
    ("X_empty", None, "no samples"),
    ("missing", None, "no such file"),
    ("X", "y_float", "the labels are float64"),
    ("X", "y_big", "out of range"),
    ("X", "y_negative", "label -1 is out of range"),
    ("X", "y_short", "expected 120 labels"),
])
def test_bad_inputs_and_labels_are_refused(inputs, labels, fragment, export, arrays, tmp_path):
    def path(name):
        return str(arrays / (name if name.endswith(".npz") else f"{name}.npy"))

    args = ["--inputs", path(inputs)] + (["--labels", path(labels)] if labels else [])
    if labels is None and inputs in ("X_transposed", "X.npz", "X_float"):  # the same check in every command
        assert_error_before_work(run_cli("evaluate", str(export), *args, "--labels", path("y")), fragment)
        assert_error_before_work(run_cli("calibrate", str(export), *args, "--labels", path("y")), fragment)
        assert_error_before_work(run_cli("profile", str(export), "--port", "loop://", *args), fragment)
    assert_error_before_work(run_cli("sim", str(export), *args, "--build-dir", str(tmp_path / "b")), fragment)


def test_one_npy_per_model_input(export, arrays, tmp_path):
    x = str(arrays / "X.npy")
    assert_error_before_work(run_cli("sim", str(export), "--inputs", x, x, "--build-dir", str(tmp_path)),
                             "the model takes 1 input", "not 2")


def test_task_flag_must_match_the_manifest(export):
    assert_error_before_work(run_cli("evaluate", str(export), "--task", "kws"), "made for task 'har'")
    assert_error_before_work(run_cli("calibrate", str(export), "--task", "vww"), "made for task 'har'")


def test_flat_inputs_run_and_match_the_model_layout(export, arrays, tmp_path):
    """The documented flat (N, size) form and the model's own shape give the same answers; the uncalibrated
    export builds with one warning line saying so."""
    flat = run_cli("evaluate", str(export), "--inputs", str(arrays / "X_flat.npy"), "--labels", str(arrays / "y.npy"),
                   "--json", str(tmp_path / "flat.json"))
    shaped = run_cli("evaluate", str(export), "--inputs", str(arrays / "X.npy"), "--labels", str(arrays / "y.npy"),
                     "--json", str(tmp_path / "shaped.json"))
    assert flat.returncode == 0 and shaped.returncode == 0, flat.stderr + shaped.stderr
    figures = json.loads((tmp_path / "flat.json").read_text())
    assert figures == json.loads((tmp_path / "shaped.json").read_text()) and figures["n"] == 120
    sim = run_cli("sim", str(export), "--inputs", str(arrays / "X_flat.npy"), "--labels", str(arrays / "y.npy"),
                  "--build-dir", str(tmp_path / "build"), "--json", str(tmp_path / "sim.json"),
                  "--out", str(tmp_path / "results"))
    assert sim.returncode == 0, sim.stderr
    warnings = [l for l in sim.stderr.splitlines() if l.startswith("tinyexit: warning:")]
    assert len(warnings) == 1 and "not calibrated" in warnings[0], sim.stderr
    summary = json.loads((tmp_path / "sim.json").read_text())
    assert summary["accuracy"] == pytest.approx(figures["int8_final_accuracy"])  # no early exit fires
    with np.load(tmp_path / "results") as results:  # the name as given, no .npz appended
        assert len(results["pred"]) == 120


# ---- outputs: checked writable before the work, written whole or not at all ----

@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int, read_only: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()[:80]})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_unwritable_outputs_fail_before_the_work(export, arrays, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    x, y = str(arrays / "X.npy"), str(arrays / "y.npy")
    assert_error_before_work(run_cli("place", "--out", str(a_file / "place")), "is a file, not a folder")
    assert_error_before_work(run_cli("demo", "--out", str(a_file)), "not a folder")
    assert_error_before_work(run_cli("evaluate", str(export), "--inputs", x, "--labels", y, "--json", "/dev/full"),
                             "--json /dev/full")
    assert_error_before_work(run_cli("sim", str(export), "--inputs", x, "--json", str(tmp_path)), "a folder")
    assert_error_before_work(run_cli("report", "--markdown", "/dev/full"), "/dev/full")
    with tmpfs(tmp_path / "ro", 64, read_only=True) as ro:
        assert_error_before_work(run_cli("train", "--out", str(ro / "model")), "Read-only file system")
        assert_error_before_work(run_cli("inputs", str(export), "--split", "test", "--out", str(ro)), "Read-only")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_failing_calibration_leaves_its_files_as_they_were(export, arrays, tmp_path, monkeypatch):
    """The manifest, sweep.csv, sweep.json and pareto.png are replaced together: a failure while writing the
    last one (a full disk, here simulated) changes none of them and leaves no temporary behind."""
    from tinyexit import pipeline
    from tinyexit.inputs import load

    copy_dir = tmp_path / "export"
    shutil.copytree(export, copy_dir)
    x, y = load(arrays / "X.npy", arrays / "y.npy", [mf.read(copy_dir)["input"]], 6)
    pipeline.calibrate(copy_dir, None, 2.0, progress=False, arrays=(x[0], y))
    before = _snapshot(copy_dir)
    assert {"manifest.json", "sweep.csv", "sweep.json", "pareto.png"} <= set(before)

    def full_disk(self, fig, path, **kwargs):
        raise TinyexitError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(atomic.Outputs, "savefig", full_disk)
    with pytest.raises(TinyexitError, match="No space left"):
        pipeline.calibrate(copy_dir, None, 0.0, progress=False, arrays=(x[0], y))
    assert _snapshot(copy_dir) == before


def test_calibrate_on_a_full_disk_changes_nothing(export, arrays, tmp_path):
    """The same on a real full file system, as a process: one error line, every file as it was."""
    with tmpfs(tmp_path / "disk", 1024) as disk:
        shutil.copytree(export, disk / "export")
        x, y = str(arrays / "X.npy"), str(arrays / "y.npy")
        first = run_cli("calibrate", str(disk / "export"), "--inputs", x, "--labels", y, "--budget-pp", "2")
        assert first.returncode == 0, first.stderr
        before = _snapshot(disk / "export")
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        # room for the pre-flight probe and the manifest, not for everything calibration writes
        (disk / "filler").write_bytes(b"\0" * (free - 24 * 1024))
        proc = run_cli("calibrate", str(disk / "export"), "--inputs", x, "--labels", y, "--budget-pp", "0")
        assert_one_line_error(proc, "No space left on device")
        assert _snapshot(disk / "export") == before


def test_atomic_writes_replace_whole_files_and_reach_devices(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic.write_json(target, {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert json.loads(target.read_text()) == {"a": 1} and target.stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(RuntimeError):
        with atomic.outputs() as out:
            out.write_text(target, "half")
            raise RuntimeError("the work failed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]  # no temporary left
    atomic.write_text("/dev/null", "into a device, not over it")
    assert Path("/dev/null").is_char_device()


# ---- report, TensorFlow's log lines, `tinyexit inputs` ----

def test_report_without_the_demo_runs_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proc = run_cli("report")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "no report.json in out/har, out/kws, out/vww" in proc.stderr and "tinyexit demo --task har" in proc.stderr
    (tmp_path / "out" / "kws").mkdir(parents=True)
    (tmp_path / "out" / "kws" / "report.json").write_text(json.dumps({"task": "kws", "mac_ratio": "oops"}))
    proc = run_cli("report")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "| | KWS |" and "out/har, out/vww" in proc.stderr


def test_tensorflow_log_lines_stay_off_the_terminal():
    code = ("from tinyexit.cli import quiet_tensorflow; quiet_tensorflow(); import keras; import tensorflow as tf; "
            "print(tf.constant([2.0]).numpy()[0])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2.0" and proc.stderr.strip() == "", proc.stderr


def test_inputs_command_makes_what_the_model_takes(export, har, tmp_path):
    from tinyexit.reference import quantize_input

    m = mf.read(export)
    proc = run_cli("inputs", str(export), "--split", "test", "--limit", "40", "--out", str(tmp_path / "split"))
    assert proc.returncode == 0, proc.stderr
    x, y = np.load(tmp_path / "split" / "X.npy"), np.load(tmp_path / "split" / "y.npy")
    split = har.test.subset(40, 0)
    assert x.dtype == np.int8 and x.shape == (40, 128, 1, 9) and np.array_equal(x, quantize_input(m, split.x))
    assert np.array_equal(y, split.y)
    # the same windows in physical units (before the manifest's normalization), flattened
    norm = m["input"]["preprocessing"]["normalize"]
    physical = split.x * np.asarray(norm["std"]) + np.asarray(norm["mean"])
    np.save(tmp_path / "physical.npy", physical.reshape(40, -1))
    np.save(tmp_path / "y.npy", split.y)
    proc = run_cli("inputs", str(export), "--float", str(tmp_path / "physical.npy"), "--normalize",
                   "--labels", str(tmp_path / "y.npy"), "--out", str(tmp_path / "float"))
    assert proc.returncode == 0, proc.stderr
    assert np.abs(np.load(tmp_path / "float" / "X.npy").astype(int) - x).max() <= 1  # float rounding only
    assert np.array_equal(np.load(tmp_path / "float" / "y.npy"), y)
    # floats far outside what the model was quantized for are accepted but said (e.g. images in 0..255)
    np.save(tmp_path / "loud.npy", split.x * 50)
    proc = run_cli("inputs", str(export), "--float", str(tmp_path / "loud.npy"), "--out", str(tmp_path / "loud"))
    assert proc.returncode == 0 and "tinyexit: warning:" in proc.stderr and "clipped" in proc.stderr
    bad = np.array(split.x)
    bad[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert_error_before_work(run_cli("inputs", str(export), "--float", str(tmp_path / "nan.npy"), "--out",
                                     str(tmp_path / "nan")), "NaN")
    assert_error_before_work(run_cli("inputs", str(export), "--float", str(tmp_path / "split" / "X.npy")),
                             "already int8")
    assert_error_before_work(run_cli("inputs", str(export), "--split", "test", "--labels", "y.npy"), "--float")
    assert not (tmp_path / "nan").exists()


# ---- property tests of the readers ----

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")
SETTINGS = hypothesis.settings(deadline=None, derandomize=True, print_blob=True,
                               suppress_health_check=list(hypothesis.HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True) |
    st.text(max_size=8) | st.sampled_from(["int8", "features", "logits", "max_prob", "entropy", "stage_0.tflite"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@st.composite
def damaged_manifests(draw, base):
    m = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(m) if p]
        where = draw(st.sampled_from(paths))
        parent = m
        for k in where[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if action == "delete":
            del parent[where[-1]]
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[where[-1]]))
        else:
            parent[where[-1]] = draw(json_values)
    return m


def test_manifest_reader_survives_any_damage(export, base_manifest, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_manifest")
    for f in export.iterdir():
        shutil.copy(f, folder / f.name)

    @hypothesis.settings(SETTINGS, max_examples=300)
    @hypothesis.given(damaged_manifests(base_manifest))
    def check(m):
        (folder / "manifest.json").write_text(json.dumps(m))
        try:
            read = mf.read(folder)
        except TinyexitError as err:
            assert "\n" not in str(err)
            return
        mf.validate({k: v for k, v in read.items() if k != "_dir"})  # what it accepts is sound

    check()


def test_tflite_reader_survives_any_damage(export, tmp_path_factory):
    """Bit flips, overwritten bytes and truncation anywhere in a stage file, read on its own and through a
    manifest whose hash was rewritten to match: a TinyexitError or a model whose fields are all usable."""
    buf = (export / "stage_0.tflite").read_bytes()
    folder = tmp_path_factory.mktemp("fuzz_tflite")
    for f in export.iterdir():
        shutil.copy(f, folder / f.name)

    edits = st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(0, 255), st.booleans()), min_size=1, max_size=6)

    @hypothesis.settings(SETTINGS, max_examples=400)
    @hypothesis.given(edits, st.one_of(st.none(), st.integers(8, len(buf))))
    def check(changes, cut):
        data = bytearray(buf)
        for at, value, flip in changes:
            data[at] = data[at] ^ (1 << (value % 8)) if flip else value
        data = bytes(data[:cut])
        try:
            g = Graph(data, "stage")
        except TinyexitError:
            return
        for t in g.tensors:  # every field the kit uses is well-formed
            assert all(d >= 0 for d in t.shape) and t.nbytes >= 0
            assert t.scale is None or np.all(np.isfinite(t.scale))
        for op in g.ops:
            assert all(-1 <= i < len(g.tensors) for i in op.inputs) and op.outputs
        (folder / "stage_0.tflite").write_bytes(data)
        _rewrite_hash(folder, 0)
        try:
            mf.read(folder)
        except TinyexitError:
            pass

    check()
