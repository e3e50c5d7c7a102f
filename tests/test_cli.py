"""Every `tinyexit` command, run as a user runs it: a separate process."""

import json
import shutil

import pytest

from tinyexit.cli import COMMANDS
from tests.conftest import assert_one_line_error, run_cli

REPORT_KEYS = {"task", "n_test", "float_accuracy", "int8_final_accuracy", "int8_early_exit_accuracy",
               "early_exit_rate", "threshold", "macs_no_exit", "macs_mean", "mac_ratio", "seconds"}


def test_help_for_every_command():
    top = run_cli("--help")
    assert top.returncode == 0
    for name in COMMANDS:
        assert name in top.stdout
        sub = run_cli(name, "--help")
        assert sub.returncode == 0 and sub.stdout.startswith(f"usage: tinyexit {name}"), sub.stderr


def test_train_export_calibrate_evaluate_chain(tmp_path, datasets):
    data = str(datasets / "har" / "HAPT.tar.xz")
    r = run_cli("train", "--data", data, "--epochs", "1", "--exits-after", "1", "--out", str(tmp_path / "m"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m" / "model.keras").is_file()
    r = run_cli("export", str(tmp_path / "m"), "--data", data, "--out", str(tmp_path / "e"))
    assert r.returncode == 0, r.stderr
    assert "stage_0.tflite" in r.stdout and (tmp_path / "e" / "stage_1.tflite").is_file()
    r = run_cli("calibrate", str(tmp_path / "e"), "--data", data, "--budget-pp", "2")
    assert r.returncode == 0, r.stderr
    assert "threshold" in r.stdout and (tmp_path / "e" / "pareto.png").is_file()
    r = run_cli("evaluate", str(tmp_path / "e"), "--data", data, "--json", str(tmp_path / "eval.json"))
    assert r.returncode == 0, r.stderr
    figures = json.loads((tmp_path / "eval.json").read_text())
    assert figures["n"] == 2996 and 0 < figures["mac_ratio"] <= 1.2


@pytest.mark.slow
def test_place(tmp_path, datasets):
    r = run_cli("place", "--data", str(datasets / "har" / "HAPT.tar.xz"), "--epochs", "2", "--head-epochs", "1",
                "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    placement = json.loads((tmp_path / "placement.json").read_text())
    assert [c["block"] for c in placement["candidates"]] == [1, 2, 3, 4]
    macs = [c["macs_to_exit"] for c in placement["candidates"]]
    assert macs == sorted(macs) and macs[-1] < placement["macs_no_exit"] * 1.1
    assert (tmp_path / "placement.png").stat().st_size > 1000
    assert "recommended" in r.stdout
    # priced in qemu-m4 instructions (CI installs the toolchain and QEMU): the same network without exits
    # as the demo measures, and each candidate's stages run once
    assert placement["priced_by"] == "projected_instruction_ratio"
    assert placement["instructions_no_exit"] > placement["macs_no_exit"]
    to_exit = [c["instructions_to_exit"] for c in placement["candidates"]]
    assert to_exit == sorted(to_exit) and to_exit[-1] < placement["instructions_no_exit"] * 1.1
    best = min(placement["candidates"], key=lambda c: c["projected_instruction_ratio"])
    assert placement["recommended_exits_after"] == [best["block"]]


@pytest.mark.slow
def test_place_without_the_toolchain_prices_macs(tmp_path, datasets):
    empty = tmp_path / "bin"
    empty.mkdir()  # a PATH with no arm-none-eabi-g++ and no qemu-system-arm
    r = run_cli("place", "--data", str(datasets / "har" / "HAPT.tar.xz"), "--epochs", "1", "--head-epochs", "1",
                "--out", str(tmp_path / "place"), env={"PATH": str(empty)})
    assert r.returncode == 0, r.stderr
    placement = json.loads((tmp_path / "place" / "placement.json").read_text())
    assert placement["priced_by"] == "projected_mac_ratio" and placement["instructions_no_exit"] is None
    best = min(placement["candidates"], key=lambda c: c["projected_mac_ratio"])
    assert placement["recommended_exits_after"] == [best["block"]]
    assert "lowest MAC ratio" in r.stdout


@pytest.mark.slow
def test_demo_writes_the_report(tmp_path, datasets):
    r = run_cli("demo", "--data", str(datasets / "har" / "HAPT.tar.xz"), "--epochs", "2", "--exits-after", "2",
                "--agreement-samples", "50", "--firmware-samples", "30", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["task"] == "har" and report["n_test"] == 2996
    assert report["mac_ratio"] == pytest.approx(report["macs_mean"] / report["macs_no_exit"])
    assert "MAC ratio" in r.stdout and (tmp_path / "export" / "pareto.png").is_file()
    assert report["firmware_mismatches_vs_tflm"] == 0 and report["firmware_samples"] == 30
    assert report["instruction_unit"] == "instructions" and report["instructions_no_exit"] > 0
    assert report["instructions_ratio"] == pytest.approx(report["instructions_mean"] / report["instructions_no_exit"])
    # every policy's test-split curve in instructions, and where plain max-probability calibration lands
    assert set(report["policy_curves"]) == {"max_prob", "margin", "entropy"}
    assert report["policy"]["kind"] == "max_prob" and report["policy_chosen"] == report["max_prob_chosen"]
    full = report["instructions_to_exit"][-1]
    for points in report["policy_curves"].values():
        assert all(0 <= acc <= 1 and 0 < instr <= full * 1.001 for acc, instr in points)
    assert (tmp_path / "policies.png").stat().st_size > 1000
    table = run_cli("report", str(tmp_path), str(tmp_path), "--markdown", str(tmp_path / "table.md"))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "| | HAR | HAR |" and (tmp_path / "table.md").read_text().splitlines() == lines
    ratio = next(l for l in lines if "instruction ratio" in l)
    assert ratio.count(f"{report['instructions_ratio']:.3f}") == 2


def test_bad_inputs_give_one_clear_error(tmp_path, har_model):
    assert_one_line_error(run_cli("train", "--data", str(tmp_path / "missing")), "HAR data not found")
    assert_one_line_error(run_cli("export", str(tmp_path)), "missing model.keras")
    assert_one_line_error(run_cli("calibrate", str(tmp_path)), "no manifest.json")
    assert_one_line_error(run_cli("report", str(tmp_path / "nowhere")), "report.json not found")
    (tmp_path / "manifest.json").write_text("{not json")
    assert_one_line_error(run_cli("evaluate", str(tmp_path)), "not valid JSON")
    broken = tmp_path / "broken"
    shutil.copytree(har_model[2], broken)
    (broken / "stage_0.tflite").write_bytes(b"garbage")
    assert_one_line_error(run_cli("evaluate", str(broken)), "does not match its sha256")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.keras").write_bytes(b"not a zip")
    (tmp_path / "model" / "spec.json").write_text(json.dumps({"task": "har"}))
    assert_one_line_error(run_cli("export", str(tmp_path / "model")), "malformed spec")
    assert_one_line_error(run_cli("demo", "--task", "vww", "--exits-after", "99", "--out", str(tmp_path / "v")),
                          "has blocks 1..")
