"""Exit policy calibration: for each policy kind asked for (tinyexit/policy.py; by default max_prob alone),
sweep its integer threshold on the validation split; pick the kind and threshold that cost least while the
accuracy stays within a budget of the final exit alone. (Choosing among several kinds on a small validation
split picks up its noise too: on KWS's 971 clips the kind chosen that way did worse on test than max_prob.)

The validation split is a sample: a threshold whose measured drop sits right at the budget is as likely to
exceed it on new data as not. So the drop must fit the budget with a margin of `margin_sigma` standard
errors of the paired difference (per sample: right at the final exit alone minus right with early exits)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from tinyexit import manifest as mf
from tinyexit import policy
from tinyexit.reference import decide


def sweep(manifest: dict, logits: list[np.ndarray], y: np.ndarray, kind: str = "max_prob") -> list[dict]:
    """Accuracy and mean MACs for every distinct threshold of policy `kind` (one shared by all early exits).

    The candidates are the scores the early exits actually reach on this data, so the sweep traces the
    exact accuracy/cost frontier; "never exit" is included (it is the final exit alone)."""
    early = [e for e in manifest["exits"] if not e["final"]]
    confs = [policy.exit_scores(e, logits[e["index"]], kind)[1] for e in early]
    candidates = np.unique(np.concatenate(confs + [np.array([policy.NEVER])]))
    final = next(e for e in manifest["exits"] if e["final"])
    right_final = (logits[final["index"]].argmax(1) == y).astype(np.float64)
    rows = []
    for t in candidates[::-1]:
        thresholds = [0 if e["final"] else int(t) for e in manifest["exits"]]
        r = decide(manifest, logits, thresholds, kind)
        difference = right_final - (r.pred == y)
        se = float(difference.std(ddof=1) / np.sqrt(len(y))) if len(y) > 1 else 0.0
        rows.append({"kind": kind, "threshold_q15": int(t), "threshold": min(int(t), policy.NEVER) / policy.Q15,
                     "accuracy": float((r.pred == y).mean()), "drop_se": se, "macs_mean": float(r.macs.mean()),
                     "exit_rates": [float((r.exit == e["index"]).mean()) for e in manifest["exits"]]})
    return rows


DEFAULT_MARGIN_SIGMA = 1.0


def within_budget(row: dict, baseline: float, budget_pp: float, margin_sigma: float = DEFAULT_MARGIN_SIGMA) -> bool:
    return baseline - row["accuracy"] + margin_sigma * row["drop_se"] <= budget_pp / 100 + 1e-12


def choose(rows: list[dict], budget_pp: float, margin_sigma: float = DEFAULT_MARGIN_SIGMA) -> tuple[dict, float]:
    """The cheapest row whose accuracy drop from the final exit alone (the never-exit row), plus `margin_sigma`
    standard errors, fits in `budget_pp` percentage points."""
    baseline = next(r for r in rows if r["threshold_q15"] == policy.NEVER)["accuracy"]
    ok = [r for r in rows if within_budget(r, baseline, budget_pp, margin_sigma)]
    return min(ok, key=lambda r: (r["macs_mean"], -r["accuracy"])), baseline


def apply(manifest: dict, threshold_q15: int, kind: str = "max_prob") -> None:
    for e in manifest["exits"]:
        if not e["final"]:
            e["policy"] = {"kind": kind, "threshold_q15": int(threshold_q15),
                           "threshold": min(threshold_q15, policy.NEVER) / policy.Q15}


def write_sweep(rows: list[dict], chosen: dict, baseline: float, budget_pp: float, out_dir: Path,
                macs_no_exit: int | None, margin_sigma: float = DEFAULT_MARGIN_SIGMA) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "sweep.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "threshold", "threshold_q15", "accuracy", "drop_se", "macs_mean"] +
                   [f"exit{i}_rate" for i in range(len(rows[0]["exit_rates"]))])
        for r in rows:
            w.writerow([r["kind"], f"{r['threshold']:.6f}", r["threshold_q15"], f"{r['accuracy']:.6f}", f"{r['drop_se']:.6f}",
                        f"{r['macs_mean']:.1f}"]
                       + [f"{x:.6f}" for x in r["exit_rates"]])
    summary = {"budget_pp": budget_pp, "margin_sigma": margin_sigma, "final_only_accuracy": baseline, "chosen": chosen,
               "macs_no_exit": macs_no_exit, "rows": rows}
    (out_dir / "sweep.json").write_text(json.dumps(summary, indent=1))
    pareto_plot(rows, chosen, baseline, budget_pp, out_dir / "pareto.png", macs_no_exit)
    return summary


def pareto_plot(rows, chosen, baseline, budget_pp, path: Path, macs_no_exit=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for kind in policy.KINDS:
        curve = [r for r in rows if r["kind"] == kind]
        if curve:
            ax.plot([r["macs_mean"] for r in curve], [100 * r["accuracy"] for r in curve], ".-", ms=3, lw=1,
                    label=f"{kind} threshold sweep (validation)")
    ax.axhline(100 * baseline, color="gray", ls="--", lw=1, label="final exit alone")
    ax.axhline(100 * (baseline - budget_pp / 100), color="gray", ls=":", lw=1, label=f"budget ({budget_pp:g} pp)")
    if macs_no_exit:
        ax.axvline(macs_no_exit, color="k", ls="-.", lw=1, label="backbone without exits")
    ax.plot([chosen["macs_mean"]], [100 * chosen["accuracy"]], "r*", ms=12,
            label=f"chosen: {chosen['kind']} t={chosen['threshold']:.3f}")
    ax.set_xlabel("average MACs per inference")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("early-exit accuracy vs cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def calibrate(manifest: dict, logits: list[np.ndarray], y: np.ndarray, budget_pp: float, out_dir: Path,
              margin_sigma: float = DEFAULT_MARGIN_SIGMA, kinds: tuple[str, ...] = ("max_prob",)) -> dict:
    """Sweep every policy kind, choose, write the policy into the manifest on disk and the sweeps beside it."""
    rows = [r for kind in kinds for r in sweep(manifest, logits, y, kind)]
    chosen, baseline = choose(rows, budget_pp, margin_sigma)
    apply(manifest, chosen["threshold_q15"], chosen["kind"])
    mf.save(manifest)
    return write_sweep(rows, chosen, baseline, budget_pp, Path(out_dir), manifest["cost"].get("macs_no_exit"),
                       margin_sigma)
