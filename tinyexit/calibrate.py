"""Exit policy calibration: for each policy kind asked for (tinyexit/policy.py; by default max_prob alone),
sweep its integer threshold on the validation split; pick the kind and threshold that cost least while the
accuracy stays within a budget of the final exit alone. (Choosing among several kinds on a small validation
split picks up its noise too: on KWS's 971 clips the kind chosen that way did worse on test than max_prob.)

The validation split is a sample: a threshold whose measured drop sits right at the budget is as likely to
exceed it on new data as not. So the drop must fit the budget with a margin of `margin_sigma` standard
errors of the paired difference (per sample: right at the final exit alone minus right with early exits).

Target-driven calibration (`calibrate_target`, `tinyexit calibrate --target`) prices every candidate in
measured instructions instead of MACs: `cost.instructions[<qemu target>]` in the manifest holds each stage's
count on the emulated core with every early exit off (tinyexit.measure.measure_instructions). The target is
an accuracy drop (cheapest candidate within it, with the margin above), or a mean instruction or energy
budget (most accurate candidate within it). Energy = instructions taken as cycles x board power / clock.
Candidates: one threshold shared by all early exits (every distinct score), and with 2-3 early exits also a
grid of per-exit thresholds (quantiles of each exit's scores)."""

from __future__ import annotations

import csv
import io
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyexit import atomic
from tinyexit import manifest as mf
from tinyexit import policy
from tinyexit.errors import TinyexitError
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


def write_sweep(rows: list[dict], chosen: dict, baseline: float, budget_pp: float | None, out_dir: Path,
                macs_no_exit: int | None, margin_sigma: float = DEFAULT_MARGIN_SIGMA, cost_field: str = "macs_mean",
                outputs: atomic.Outputs | None = None, more: dict | None = None) -> dict:
    """sweep.csv, sweep.json (the summary, plus `more`) and pareto.png in out_dir; with `outputs`, as part of
    that group of files (see tinyexit.atomic), else as a group of their own."""
    if outputs is None:
        with atomic.outputs() as group:
            return write_sweep(rows, chosen, baseline, budget_pp, out_dir, macs_no_exit, margin_sigma, cost_field,
                               group, more)
    extra = [k for k in ("instructions_mean", "energy_uj") if k in rows[0]]
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["kind", "threshold", "threshold_q15", "accuracy", "drop_se", "macs_mean"] + extra +
               [f"exit{i}_rate" for i in range(len(rows[0]["exit_rates"]))] +
               (["thresholds_q15"] if "thresholds_q15" in rows[0] else []))
    for r in rows:
        w.writerow([r["kind"], f"{r['threshold']:.6f}", r["threshold_q15"], f"{r['accuracy']:.6f}", f"{r['drop_se']:.6f}",
                    f"{r['macs_mean']:.1f}"] + [f"{r[k]:.4f}" for k in extra]
                   + [f"{x:.6f}" for x in r["exit_rates"]]
                   + ([" ".join(map(str, r["thresholds_q15"]))] if "thresholds_q15" in r else []))
    outputs.write_text(out_dir / "sweep.csv", f.getvalue())
    summary = {"budget_pp": budget_pp, "margin_sigma": margin_sigma, "final_only_accuracy": baseline, "chosen": chosen,
               "macs_no_exit": macs_no_exit, "rows": rows, **(more or {})}
    outputs.write_json(out_dir / "sweep.json", summary)
    pareto_plot(rows, chosen, baseline, budget_pp, out_dir / "pareto.png", macs_no_exit if cost_field == "macs_mean"
                else None, cost_field, outputs)
    return summary


def pareto_plot(rows, chosen, baseline, budget_pp, path: Path, macs_no_exit=None, cost_field="macs_mean",
                outputs: atomic.Outputs | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for kind in policy.KINDS:
        curve = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r[cost_field])
        if curve:  # per-exit grids are scattered points; the line joins them in cost order
            ax.plot([r[cost_field] for r in curve], [100 * r["accuracy"] for r in curve], ".-", ms=3, lw=1,
                    label=f"{kind} threshold sweep (validation)")
    ax.axhline(100 * baseline, color="gray", ls="--", lw=1, label="final exit alone")
    if budget_pp is not None:
        ax.axhline(100 * (baseline - budget_pp / 100), color="gray", ls=":", lw=1, label=f"budget ({budget_pp:g} pp)")
    if macs_no_exit:
        ax.axvline(macs_no_exit, color="k", ls="-.", lw=1, label="backbone without exits")
    ax.plot([chosen[cost_field]], [100 * chosen["accuracy"]], "r*", ms=12,
            label=f"chosen: {chosen['kind']} t={chosen['threshold']:.3f}")
    ax.set_xlabel("average MACs per inference" if cost_field == "macs_mean" else "mean instructions per inference (measured)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("early-exit accuracy vs cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    if outputs is None:
        atomic.savefig(fig, path)
    else:
        outputs.savefig(fig, path)
    plt.close(fig)


def calibrate(manifest: dict, logits: list[np.ndarray], y: np.ndarray, budget_pp: float, out_dir: Path,
              margin_sigma: float = DEFAULT_MARGIN_SIGMA, kinds: tuple[str, ...] = ("max_prob",)) -> dict:
    """Sweep every policy kind, choose, write the policy into the manifest on disk and the sweeps beside it."""
    rows = [r for kind in kinds for r in sweep(manifest, logits, y, kind)]
    chosen, baseline = choose(rows, budget_pp, margin_sigma)
    apply(manifest, chosen["threshold_q15"], chosen["kind"])
    with atomic.outputs() as outputs:  # the manifest and the sweep files are replaced together or not at all
        mf.save(manifest, outputs)
        return write_sweep(rows, chosen, baseline, budget_pp, Path(out_dir), manifest["cost"].get("macs_no_exit"),
                           margin_sigma, outputs=outputs)


def headroom(logits: list[np.ndarray], y: np.ndarray, cost_per_exit: np.ndarray, reference: list[float],
             tolerance_pp: float = 0.2) -> dict:
    """What any exit policy could save over `reference` ([accuracy, mean cost], e.g. calibrated max_prob) on
    these samples, with perfect knowledge of which exits are right:
      floor: every sample leaves at the first exit (no policy runs less, whatever its accuracy);
      oracle: each sample leaves at the earliest exit that is right (at the first exit if none is);
      oracle_equal_accuracy: the cheapest such assignment that still reaches the reference accuracy minus
        `tolerance_pp` (start everyone at the first exit, then move the samples it gets wrong to their earliest
        right exit, cheapest moves first: exact, since every move gains one right answer)."""
    cost = np.asarray(cost_per_exit, np.float64)
    right = np.stack([l.argmax(1) == y for l in logits])
    n = len(y)
    earliest = np.where(right.any(0), right.argmax(0), 0)
    ref_acc, ref_cost = reference

    def point(acc, instr):
        return {"accuracy": float(acc), "instructions": float(instr), "saving": float(1 - instr / ref_cost)}

    need = int(math.ceil((ref_acc - tolerance_pp / 100) * n - 1e-9)) - int(right[0].sum())
    moves = np.sort(cost[earliest[~right[0] & right.any(0)]] - cost[0])
    if need <= 0:
        equal = point(right[0].mean(), cost[0])
    elif need <= len(moves):
        equal = point((right[0].sum() + need) / n, cost[0] + moves[:need].sum() / n)
    else:
        equal = None
    return {"tolerance_pp": tolerance_pp, "reference": [float(ref_acc), float(ref_cost)],
            "floor": point(right[0].mean(), cost[0]), "oracle": point(right.any(0).mean(), cost[earliest].mean()),
            "oracle_equal_accuracy": equal}


def best_at_accuracy(points: list[list[float]], accuracy: float, tolerance_pp: float = 0.2) -> list[float] | None:
    """The cheapest [accuracy, cost] point within `tolerance_pp` below `accuracy` (or above it)."""
    ok = [p for p in points if p[0] >= accuracy - tolerance_pp / 100 - 1e-12]
    return min(ok, key=lambda p: (p[1], -p[0])) if ok else None


# ---- target-driven calibration ----

TARGET_FORMS = "accuracy-drop=Ppp, instructions=N or energy-uj=E"
_SUFFIX = {"k": 1e3, "m": 1e6, "g": 1e9}


@dataclass(frozen=True)
class Target:
    kind: str  # "accuracy-drop" (value in pp), "instructions" (mean per inference), "energy-uj" (mean, uJ)
    value: float
    text: str


def parse_target(text: str) -> Target:
    """`accuracy-drop=1pp` (the pp optional), `instructions=2500000` (or 2.5M, 250k), `energy-uj=12.5`."""
    name, sep, raw = str(text).partition("=")
    name, raw = name.strip().lower(), raw.strip().lower()
    bad = TinyexitError(f"--target '{text}': expected {TARGET_FORMS} (e.g. accuracy-drop=1pp, instructions=2.5M)")
    if not sep or not raw:
        raise bad
    scale = 1.0
    if name == "accuracy-drop" and raw.endswith("pp"):
        raw = raw[:-2]
    elif name == "instructions" and raw[-1] in _SUFFIX:
        raw, scale = raw[:-1], _SUFFIX[raw[-1]]
    elif name not in ("accuracy-drop", "instructions", "energy-uj"):
        raise bad
    try:
        value = float(raw) * scale
    except ValueError:
        raise bad from None
    if not math.isfinite(value) or value < 0 or (value == 0 and name != "accuracy-drop") or \
            (name == "accuracy-drop" and value > 100):
        raise TinyexitError(f"--target '{text}': the value must be a finite number, "
                            + ("0 to 100 pp" if name == "accuracy-drop" else "above 0"))
    return Target(name, value, text)


def exit_costs(manifest: dict, instructions_to_stage_end: list[float]) -> np.ndarray:
    """Instructions spent when leaving at each exit (its stage and every stage before it)."""
    return np.asarray([instructions_to_stage_end[e["stage"]] for e in manifest["exits"]], np.float64)


def candidates(scores: list[np.ndarray], grid: int = 16) -> list[tuple[int, ...]]:
    """Threshold vectors for the early exits: one shared threshold at every distinct score (the exact frontier
    for a single early exit), plus per-exit quantile grids where there are 2 or 3 early exits."""
    shared = np.unique(np.concatenate(scores + [np.array([policy.NEVER])]))[::-1]
    out = [tuple([int(t)] * len(scores)) for t in shared]
    if 2 <= len(scores) <= 3:
        axes = [np.unique(np.r_[np.quantile(s, np.linspace(0, 1, grid)).round().astype(np.int64), policy.NEVER])
                for s in scores]
        seen = set(out)
        out += [c for c in itertools.product(*[[int(t) for t in a] for a in axes]) if c not in seen]
    return out


def sweep_costed(manifest: dict, logits: list[np.ndarray], y: np.ndarray, kind: str, cost_per_exit: np.ndarray,
                 board=None) -> list[dict]:
    """Every candidate of policy `kind`: accuracy, its standard error vs the final exit alone, mean MACs,
    mean instructions (and energy on `board`), exit rates."""
    exits = manifest["exits"]
    early = [e for e in exits if not e["final"]]
    scored = [policy.exit_scores(e, logits[e["index"]], kind) for e in exits]
    final = next(e for e in exits if e["final"])
    right_final = (scored[final["index"]][0] == y).astype(np.float64)
    right = np.stack([s[0] == y for s in scored])  # (exits, N)
    macs = np.asarray([manifest["cost"]["macs_to_exit"][e["stage"]] for e in exits], np.float64)
    n = len(y)
    rows = []
    for thresholds in candidates([scored[e["index"]][1] for e in early]):
        t = dict(zip([e["index"] for e in early], thresholds))
        taken = np.full(n, final["index"])
        open_ = np.ones(n, bool)
        for e in exits:  # in exit order, as the firmware tests them
            if e["final"]:
                continue
            go = open_ & (scored[e["index"]][1] >= t[e["index"]])
            taken[go] = e["index"]
            open_ &= ~go
        ok = right[taken, np.arange(n)]
        difference = right_final - ok
        rates = np.bincount(taken, minlength=len(exits)) / n
        row = {"kind": kind, "thresholds_q15": list(thresholds), "threshold_q15": int(thresholds[0]),
               "threshold": min(int(thresholds[0]), policy.NEVER) / policy.Q15, "accuracy": float(ok.mean()),
               "drop_se": float(difference.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
               "macs_mean": float(rates @ macs), "instructions_mean": float(rates @ cost_per_exit),
               "exit_rates": rates.tolist()}
        if board is not None:
            row["energy_uj"] = board.energy_uj(row["instructions_mean"])
        rows.append(row)
    return rows


def choose_target(rows: list[dict], target: Target, baseline: float, margin_sigma: float = DEFAULT_MARGIN_SIGMA,
                  board=None) -> dict:
    """accuracy-drop: the fewest instructions within the drop (plus margin); instructions / energy-uj: the highest
    accuracy within the budget (fewest instructions among equals)."""
    if target.kind == "accuracy-drop":
        ok = [r for r in rows if within_budget(r, baseline, target.value, margin_sigma)]
        return min(ok, key=lambda r: (r["instructions_mean"], -r["accuracy"]))
    field = "instructions_mean" if target.kind == "instructions" else "energy_uj"
    if field == "energy_uj" and board is None:
        raise TinyexitError("an energy target needs a board (--board NAME)")
    ok = [r for r in rows if r[field] <= target.value * (1 + 1e-12)]
    if not ok:
        cheapest = min(rows, key=lambda r: r[field])
        unit = "instructions" if field == "instructions_mean" else f"uJ on {board.name}"
        raise TinyexitError(f"no policy meets {target.text} on the validation split: the cheapest costs "
                            f"{cheapest[field]:,.{0 if field == 'instructions_mean' else 3}f} {unit} "
                            f"(exit rates {', '.join(f'{x:.1%}' for x in cheapest['exit_rates'])})")
    return max(ok, key=lambda r: (r["accuracy"], -r["instructions_mean"]))


def apply_thresholds(manifest: dict, thresholds_q15: list[int], kind: str) -> None:
    """Per-exit thresholds (in early-exit order) of one policy kind into the manifest's early exits."""
    early = [e for e in manifest["exits"] if not e["final"]]
    for e, t in zip(early, thresholds_q15, strict=True):
        e["policy"] = {"kind": kind, "threshold_q15": int(t), "threshold": min(int(t), policy.NEVER) / policy.Q15}


def calibrate_target(manifest: dict, logits: list[np.ndarray], y: np.ndarray, target: Target,
                     instructions: dict, out_dir: Path, margin_sigma: float = DEFAULT_MARGIN_SIGMA,
                     kinds: tuple[str, ...] = ("max_prob",), board=None, cost_target: str = "qemu-m4") -> dict:
    """Sweep each kind priced in `instructions` (a manifest `cost.instructions` entry), choose for `target`,
    write the policy into the manifest on disk and the sweep beside it."""
    cost = exit_costs(manifest, instructions["to_exit"])
    rows = [r for kind in kinds for r in sweep_costed(manifest, logits, y, kind, cost, board)]
    baseline = next(r for r in rows if r["threshold_q15"] == policy.NEVER and len(set(r["thresholds_q15"])) == 1)
    baseline = baseline["accuracy"]
    chosen = choose_target(rows, target, baseline, margin_sigma, board)
    apply_thresholds(manifest, chosen["thresholds_q15"], chosen["kind"])
    more = {"target": {"kind": target.kind, "value": target.value, "text": target.text},
            "cost_target": cost_target, "instructions": instructions, "board": board.name if board is not None else None}
    with atomic.outputs() as outputs:  # the manifest and the sweep files are replaced together or not at all
        mf.save(manifest, outputs)
        return write_sweep(rows, chosen, baseline, target.value if target.kind == "accuracy-drop" else None,
                           Path(out_dir), manifest["cost"].get("macs_no_exit"), margin_sigma,
                           cost_field="instructions_mean", outputs=outputs, more=more)
