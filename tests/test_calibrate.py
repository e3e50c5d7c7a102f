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
