import json
import shutil

import numpy as np
import pytest

from tinyexit import manifest as mf
from tinyexit import pipeline, policy
from tinyexit.calibrate import choose, sweep, within_budget
from tinyexit.reference import all_exit_logits, decide, quantize_input


@pytest.fixture()
def export_copy(har_model, tmp_path):
    shutil.copytree(har_model[2], tmp_path / "export")
    return tmp_path / "export"


@pytest.mark.parametrize("budget,sigma", [(0.0, 0.0), (1.0, 0.0), (3.0, 0.0), (1.0, 1.0), (3.0, 2.0)])
def test_calibration_respects_the_budget_and_is_the_cheapest(export_copy, har, budget, sigma):
    m = mf.read(export_copy)
    logits = all_exit_logits(m, quantize_input(m, har.val.x))
    rows = sweep(m, logits, har.val.y)
    chosen, baseline = choose(rows, budget, sigma)
    assert chosen["accuracy"] - sigma * chosen["drop_se"] >= baseline - budget / 100 - 1e-9
    cheaper = [r for r in rows if r["macs_mean"] < chosen["macs_mean"]]
    assert all(not within_budget(r, baseline, budget, sigma) for r in cheaper)
    # the margin only ever makes the choice more cautious
    if sigma > 0:
        assert chosen["macs_mean"] >= choose(rows, budget, 0.0)[0]["macs_mean"]
    # the standard error is that of the paired per-sample difference from the final exit alone
    final_right = logits[-1].argmax(1) == har.val.y
    r = decide(m, logits, [chosen["threshold_q15"], 0])
    difference = final_right.astype(float) - (r.pred == har.val.y)
    assert np.isclose(chosen["drop_se"], difference.std(ddof=1) / np.sqrt(len(difference)))
    # the sweep's figures are what the policy really does at that threshold
    r = decide(m, logits, [chosen["threshold_q15"], 0])
    assert np.isclose((r.pred == har.val.y).mean(), chosen["accuracy"])


def test_calibrate_writes_manifest_sweep_and_plot(export_copy, har):
    summary = pipeline.calibrate(export_copy, har, budget_pp=1.0, progress=False, kinds=policy.KINDS)
    m = mf.read(export_copy)
    pol = m["exits"][0]["policy"]
    assert pol["threshold_q15"] == summary["chosen"]["threshold_q15"] <= policy.NEVER
    assert pol["kind"] == summary["chosen"]["kind"] and pol["kind"] in policy.KINDS
    assert m["exits"][1]["policy"] is None
    rows = json.loads((export_copy / "sweep.json").read_text())["rows"]
    assert {r["kind"] for r in rows} == set(policy.KINDS)  # every policy swept; the cheapest within budget chosen
    assert summary["chosen"] == choose(rows, 1.0)[0]
    for name in ("sweep.csv", "sweep.json", "pareto.png"):
        assert (export_copy / name).stat().st_size > 100
    assert rows[0]["threshold_q15"] == policy.NEVER
    assert len((export_copy / "sweep.csv").read_text().splitlines()) == len(rows) + 1


# ---- target-driven calibration (tinyexit calibrate --target) ----

from tests.conftest import assert_one_line_error, run_cli  # noqa: E402
from tinyexit.calibrate import Target, choose_target, parse_target  # noqa: E402
from tinyexit.errors import TinyexitError  # noqa: E402


def test_target_strings():
    assert parse_target("accuracy-drop=1pp") == Target("accuracy-drop", 1.0, "accuracy-drop=1pp")
    assert parse_target("accuracy-drop=0.5").value == 0.5
    assert parse_target("instructions=2.5M").value == 2_500_000
    assert parse_target("instructions=250k").value == 250_000
    assert parse_target("INSTRUCTIONS = 1200").value == 1200
    assert parse_target("energy-uj=12.5") == Target("energy-uj", 12.5, "energy-uj=12.5")
    for bad in ("", "1pp", "accuracy-drop", "accuracy-drop=", "accuracy-drop=-1pp", "accuracy-drop=101",
                "accuracy-drop=1%", "instructions=abc", "instructions=0", "instructions=1e999", "energy-uj=nan",
                "energy-uj=0", "latency-ms=3", "instructions=3x"):
        with pytest.raises(TinyexitError, match="--target"):
            parse_target(bad)


def test_choose_target_rules():
    rows = [{"accuracy": a, "drop_se": 0.0, "instructions_mean": c, "energy_uj": c / 100, "exit_rates": [0.0, 1.0]}
            for a, c in ((0.90, 100), (0.89, 60), (0.895, 80), (0.88, 40), (0.895, 70))]
    assert choose_target(rows, Target("accuracy-drop", 1.0, ""), 0.90, 0.0)["instructions_mean"] == 60
    assert choose_target(rows, Target("accuracy-drop", 0.5, ""), 0.90, 0.0)["instructions_mean"] == 70
    assert choose_target(rows, Target("instructions", 85, ""), 0.90)["instructions_mean"] == 70  # tie: cheaper
    with pytest.raises(TinyexitError, match="board"):
        choose_target(rows, Target("energy-uj", 1, ""), 0.90)
    with pytest.raises(TinyexitError, match="the cheapest costs 40"):
        choose_target(rows, Target("instructions", 39, ""), 0.90)


@pytest.fixture(scope="module")
def target_export(har_model, tmp_path_factory):
    """A copy of the HAR export and a host firmware built from it before any target calibration."""
    from tinyexit.firmware_build import build

    root = tmp_path_factory.mktemp("target")
    shutil.copytree(har_model[2], root / "export")
    return root / "export", build(root / "export", "host", root / "fw")


def test_calibrate_target_as_a_process_and_the_firmware_takes_it_at_run_time(target_export, har, datasets):
    """Each target picks from measured qemu-m4 instructions and writes the manifest; the firmware built before
    any of them takes each new policy through SET_POLICY (no rebuild) and decides exactly as Python."""
    from tinyexit.boards import for_target
    from tinyexit.codegen import model_hash
    from tinyexit.harness import host_firmware

    export, fw = target_export
    data = ["--data", str(datasets / "har" / "HAPT.tar.xz")]
    r = run_cli("calibrate", str(export), "--target", "accuracy-drop=1pp", *data)
    assert r.returncode == 0, r.stderr
    assert "measuring each stage's instructions on qemu-m4" in r.stdout
    m = mf.read(export)
    counts = m["cost"]["instructions"]["qemu-m4"]
    per_mac = np.asarray(counts["stage"]) / np.diff([0] + m["cost"]["macs_to_exit"])
    assert counts["unit"] == "instructions" and counts["samples"] == 20 and np.all((0.5 < per_mac) & (per_mac < 20))
    cost = np.asarray(counts["to_exit"])
    logits = all_exit_logits(m, quantize_input(m, har.val.x))
    right_final = logits[-1].argmax(1) == har.val.y
    idx = np.arange(0, len(har.val.y), 4)
    with host_firmware(fw.binary) as dev:
        for spec in ("accuracy-drop=1pp", "instructions", "energy-uj"):
            if spec != "accuracy-drop=1pp":
                lo, hi = cost[0], cost[-1]
                value = lo + 0.3 * (hi - lo)  # a budget between exiting everything early and never
                if spec == "energy-uj":
                    value = for_target("qemu-m4").energy_uj(value)
                spec = f"{spec}={value:.6g}"
                r = run_cli("calibrate", str(export), "--target", spec, *data)
                assert r.returncode == 0, r.stderr
                assert "measuring" not in r.stdout  # the manifest's counts are reused
            m = mf.read(export)
            s = json.loads((export / "sweep.json").read_text())
            chosen, rows = s["chosen"], s["rows"]
            assert s["target"]["text"] == spec and [e["policy"]["threshold_q15"] for e in m["exits"][:-1]] == \
                chosen["thresholds_q15"]
            # the sweep's figures are what the policy does, priced with the stored counts
            thresholds = chosen["thresholds_q15"] + [0]
            ref = decide(m, logits, thresholds)
            assert np.isclose((ref.pred == har.val.y).mean(), chosen["accuracy"])
            assert np.isclose(cost[ref.exit].mean(), chosen["instructions_mean"])
            if spec.startswith("accuracy-drop"):
                drop = right_final.mean() - chosen["accuracy"] + chosen["drop_se"]
                assert drop <= 0.01 + 1e-12
                assert all(not within_budget(r, right_final.mean(), 1.0) for r in rows
                           if r["instructions_mean"] < chosen["instructions_mean"])
            else:
                field = "instructions_mean" if spec.startswith("instructions") else "energy_uj"
                assert chosen[field] <= value * (1 + 1e-9)
                assert max(r["accuracy"] for r in rows if r[field] <= value * (1 + 1e-9)) == chosen["accuracy"]
            # the running firmware takes the new thresholds; a recalibrated manifest still names it
            assert dev.info()["sha256"] == model_hash(m).hex()
            dev.set_policy({0: chosen["thresholds_q15"][0]})
            for i in idx:
                got = dev.infer(quantize_input(m, har.val.x[i:i + 1])[0], with_output=False)
                assert (got.exit, got.predicted_class, got.confidence_q15) == \
                    (ref.exit[i], ref.pred[i], ref.confidence_q15[i]), (spec, i)
    assert (export / "pareto.png").stat().st_size > 1000
    _profile_applies_the_manifest_thresholds(export, fw, har, logits)


def _profile_applies_the_manifest_thresholds(export, fw, har, logits):
    """`tinyexit profile` on firmware built before calibration: same model hash, the manifest's new thresholds
    pushed through SET_POLICY (the build itself has none: its early exit never takes)."""
    import subprocess

    m = mf.read(export)
    x = quantize_input(m, har.val.x[:60])
    np.save(export.parent / "x.npy", x)
    expected = np.bincount(decide(m, [l[:60] for l in logits]).exit, minlength=2).tolist()
    assert expected[0] > 0
    proc = subprocess.Popen([str(fw.binary), "--port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        port = int(proc.stderr.readline().split()[1])
        r = run_cli("profile", str(export), "--port", f"socket://127.0.0.1:{port}", "--inputs",
                    str(export.parent / "x.npy"), "--json", str(export.parent / "profile.json"))
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert r.returncode == 0, r.stderr
    assert json.loads((export.parent / "profile.json").read_text())["exit_histogram"] == expected


def test_calibrate_target_errors_are_one_line(target_export, datasets):
    export, _ = target_export
    for spec, fragment in (("speed=3", "expected accuracy-drop"), ("instructions=lots", "expected"),
                           ("energy-uj=-2", "above 0"), ("instructions=1000", "no policy meets instructions=1000")):
        assert_one_line_error(run_cli("calibrate", str(export), "--target", spec, "--data",
                                      str(datasets / "har" / "HAPT.tar.xz")), fragment)
    assert_one_line_error(run_cli("calibrate", str(export), "--target", "instructions=1M", "--board", "pico"),
                          "no QEMU stand-in")
    assert_one_line_error(run_cli("calibrate", str(export), "--target", "instructions=1M", "--board", "nope"),
                          "unknown board")
    assert_one_line_error(run_cli("calibrate", str(export), "--target", "instructions=1M", "--budget-pp", "1"),
                          "not both")
    assert_one_line_error(run_cli("calibrate", str(export), "--board", "pico"), "go with --target")


def test_model_hash_leaves_out_only_what_changes_at_run_time(export_copy):
    from tinyexit.codegen import model_hash

    m = mf.read(export_copy)
    base = model_hash(m)
    m["exits"][0]["policy"] = {"kind": "max_prob", "threshold_q15": 123, "threshold": 123 / policy.Q15}
    m["cost"]["instructions"] = {"qemu-m4": {"stage": [1.0, 2.0]}}
    m["offload"] = {"exits": [{"exit": 0, "enabled": True}]}  # sent by SET_OFFLOAD, not compiled in
    assert model_hash(m) == base
    m["exits"][0]["policy"]["kind"] = "entropy"  # compiled in: another firmware
    assert model_hash(m) != base
    m = mf.read(export_copy)
    m["stages"][0]["sha256"] = "0" * 64
    assert model_hash(m) != base


def test_headroom_bounds_by_hand():
    from tinyexit.calibrate import best_at_accuracy, headroom

    # samples: right at exit 0 / only from exit 1 / only at exit 2 / never; costs 10, 20, 40 per exit
    y = np.zeros(4, np.int64)
    right = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0]], bool)
    logits = [np.where(r[:, None], [[5, 0]], [[0, 5]]).astype(np.int8) for r in right]
    cost = np.array([10.0, 20.0, 40.0])
    h = headroom(logits, y, cost, [0.5, 25.0], tolerance_pp=0.0)
    assert (h["floor"]["accuracy"], h["floor"]["instructions"]) == (0.25, 10)
    assert (h["oracle"]["accuracy"], h["oracle"]["instructions"]) == (0.75, 20)  # (10 + 20 + 40 + 10) / 4
    assert (h["oracle_equal_accuracy"]["accuracy"], h["oracle_equal_accuracy"]["instructions"]) == (0.5, 12.5)
    assert h["oracle_equal_accuracy"]["saving"] == 0.5 and h["floor"]["saving"] == 0.6
    assert headroom(logits, y, cost, [0.75, 25.0], 0.0)["oracle_equal_accuracy"]["instructions"] == 20
    assert headroom(logits, y, cost, [1.0, 25.0], 0.0)["oracle_equal_accuracy"] is None  # nobody reaches it
    assert headroom(logits, y, cost, [0.26, 25.0], 2.0)["oracle_equal_accuracy"]["instructions"] == 10  # tolerance
    points = [[0.90, 100.0], [0.899, 80.0], [0.897, 60.0], [0.95, 120.0]]
    assert best_at_accuracy(points, 0.90) == [0.899, 80.0]
    assert best_at_accuracy(points, 0.90, 0.5) == [0.897, 60.0]
    assert best_at_accuracy(points, 0.99) is None
