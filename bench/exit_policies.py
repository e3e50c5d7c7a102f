"""How much could any exit policy save? Measured on `tinyexit demo` outputs (export/ + report.json).

    python bench/exit_policies.py out/har out/kws out/vww [--json figures.json]

For each run: every exit's int8 logits and the cut features on train/validation/test through TFLite Micro;
each stage's and each layer's qemu-m4 instructions (PROFILE, early exits off); then on the test split, against
max_prob at the threshold plain calibration picks on validation (1 pp, 1 standard error):
  - the three integer policies at equal accuracy (-0.2 pp; thresholds picked on test: an upper bound),
  - the headroom no policy can beat (tinyexit.calibrate.headroom: first-exit floor, oracle),
  - reuse of the early exit's logits by the final exit (Zero-Time-Waste style): final = (l1 - z1) * 256 +
    (l0 - z0) * a, a = round(256 * w * s0 / s1), w fitted on validation,
  - a learned exit gate: logistic regression on the cut features' per-channel mean and max, trained on the
    training split to predict "exit 0 is right"; when it says no, the head is skipped. Its cost is estimated
    from the measured instructions per value of the head's own average pool, over the cut tensor.
Models with one early exit (the demos) only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinyexit import calibrate as cal  # noqa: E402
from tinyexit import manifest as mf  # noqa: E402
from tinyexit import pipeline, policy  # noqa: E402
from tinyexit.reference import load_stages, quantize_input  # noqa: E402

TOLERANCE_PP = 0.2


def run_stages(manifest: dict, x_q: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Every exit's logits and stage 0's features output, sample by sample through TFLite Micro."""
    stages = load_stages(manifest)
    logits = [np.zeros((len(x_q), e["classes"]), np.int8) for e in manifest["exits"]]
    features = None
    for n in range(len(x_q)):
        f = x_q[n:n + 1]
        for k, stage in enumerate(stages):
            outs = stage(f)
            for e in manifest["exits"]:
                if e["stage"] == k:
                    logits[e["index"]][n] = outs[e["output"]].reshape(-1)
            f = outs[0]
            if k == 0:
                features = np.zeros((len(x_q),) + f.shape[1:], np.int8) if features is None else features
                features[n] = f[0]
    return logits, features


def instructions(export: Path, manifest: dict, x_q: np.ndarray, samples: int) -> dict:
    """Per stage and per layer on qemu-m4 with early exits off; which stage-0 layers only feed the exit head."""
    from tinyexit.firmware_build import build
    from tinyexit.harness import firmware
    from tinyexit.tflite_graph import Graph

    with tempfile.TemporaryDirectory() as tmp:
        fw = build(export, "qemu-m4", Path(tmp))
        with firmware("qemu-m4", fw.binary) as dev:
            dev.set_policy({0: policy.NEVER})
            runs = [dev.infer(x_q[i], with_output=False, profile=True) for i in range(samples)]
            plain = [dev.infer(x_q[i], with_output=False).stage_cycles for i in range(samples)]  # no PROFILE reads
    g = Graph.load(mf.stage_path(manifest, manifest["stages"][0]))
    needed, backbone = {g.outputs[0]}, set()
    for op in reversed(g.ops):  # ops the features output depends on; the rest only feed the exit logits
        if any(t in needed for t in op.outputs):
            backbone.add(op.index)
            needed |= {t for t in op.inputs if t >= 0}
    layers = np.mean([r.layer_cycles for r in runs], axis=0)
    stage0 = [{"op": g.ops[i].op, "head": i not in backbone, "instructions": float(layers[i]),
               "input_values": int(np.prod(g.tensors[g.ops[i].inputs[0]].shape))} for i in range(len(g.ops))]
    stage = np.mean(plain, axis=0)
    return {"stage": stage.tolist(), "to_exit": np.cumsum(stage).tolist(), "stage0_layers": stage0,
            "head": float(sum(l["instructions"] for l in stage0 if l["head"]))}


def plain_reference(manifest, val_logits, val_y, test_logits, test_y, cost):
    """max_prob at the threshold plain calibration picks on validation, on test: [accuracy, instructions]."""
    chosen, _ = cal.choose(cal.sweep(manifest, val_logits, val_y, "max_prob"), 1.0, cal.DEFAULT_MARGIN_SIGMA)
    cls0, s0 = policy.exit_scores(manifest["exits"][0], test_logits[0])
    go = s0 >= chosen["threshold_q15"]
    pred = np.where(go, cls0, test_logits[1].argmax(1))
    return [float((pred == test_y).mean()), float(cost[0] + (1 - go.mean()) * (cost[1] - cost[0]))], chosen


def curve(manifest, logits, y, cost, kind="max_prob", final_pred=None, gate=None, head=0.0, gate_cost=0.0):
    """[accuracy, mean instructions] at every threshold; `final_pred` replaces the final exit's classes (reuse);
    `gate` (bool per sample) skips the head where False, saving `head` and costing `gate_cost` everywhere."""
    cls0, s0 = policy.exit_scores(manifest["exits"][0], logits[0], kind)
    final_pred = logits[1].argmax(1) if final_pred is None else final_pred
    passed = np.ones(len(y), bool) if gate is None else gate
    points = []
    for t in np.unique(np.r_[s0, policy.NEVER]):
        go = passed & (s0 >= t)
        pred = np.where(go, cls0, final_pred)
        spent = cost[0] + (1 - go.mean()) * (cost[1] - cost[0]) - (1 - passed.mean()) * head + gate_cost
        points.append([float((pred == y).mean()), float(spent)])
    return points


def reuse_weights(manifest: dict) -> tuple[list[int], list[float]]:
    zero = [next(o for o in manifest["stages"][e["stage"]]["outputs"] if o["role"] == "logits")["zero_point"]
            for e in manifest["exits"]]
    return zero, [e["logit_scale"] for e in manifest["exits"]]


def reused_final(manifest, logits, w: float) -> np.ndarray:
    """Integer combination of the final logits with exit 0's (Q8 weight), argmax (lowest index on ties)."""
    zero, scale = reuse_weights(manifest)
    a = int(round(256 * w * scale[0] / scale[1]))
    z = (logits[1].astype(np.int32) - zero[1]) * 256 + (logits[0].astype(np.int32) - zero[0]) * a
    return z.argmax(1)


def fit_gate(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 3000, lr: float = 0.5):
    """Logistic regression by gradient descent on standardised inputs: returns p(x)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w, b = np.zeros(z.shape[1]), 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(z @ w + b)))
        w -= lr * (z.T @ (p - y) / len(y) + l2 * w)
        b -= lr * float((p - y).mean())
    return lambda v: 1 / (1 + np.exp(-(((v - mu) / sd) @ w + b)))


def pooled(features: np.ndarray) -> np.ndarray:
    f = features.astype(np.float64)
    return np.concatenate([f.mean(axis=(1, 2)), f.max(axis=(1, 2))], axis=1)


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    s = score[order]
    ranks[order] = np.arange(1, len(score) + 1)
    for v in np.unique(s):  # average ranks over ties
        tie = score == v
        ranks[tie] = ranks[tie].mean()
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def analyse(run_dir: Path, samples: int) -> dict:
    export = run_dir / "export"
    manifest = mf.read(export)
    if len(manifest["exits"]) != 2:
        sys.exit(f"{run_dir}: this analysis handles one early exit; the model has {len(manifest['exits']) - 1}")
    ds = pipeline.load_data(manifest["task"], None)
    data = {}
    for name in ("train", "val", "test"):
        split = getattr(ds, name)
        data[name] = (*run_stages(manifest, quantize_input(manifest, split.x)), split.y)
    counts = instructions(export, manifest, quantize_input(manifest, ds.val.x), samples)
    cost = np.asarray(counts["to_exit"])
    (val_l, _, val_y), (test_l, test_f, test_y) = data["val"], data["test"]
    reference, plain = plain_reference(manifest, val_l, val_y, test_l, test_y, cost)
    out = {"task": manifest["task"], "n_test": int(len(test_y)), "instructions": counts, "max_prob_chosen": reference,
           "max_prob_threshold_q15": plain["threshold_q15"],
           "exit_accuracy": [float((l.argmax(1) == test_y).mean()) for l in test_l]}
    out["headroom"] = cal.headroom(test_l, test_y, cost, reference, TOLERANCE_PP)
    out["policies"] = {k: cal.best_at_accuracy(curve(manifest, test_l, test_y, cost, k), reference[0], TOLERANCE_PP)
                       for k in policy.KINDS}

    # reuse: w on validation (accuracy of the final exit alone), then the curve on test
    grid = np.round(np.arange(0, 2.0001, 0.05), 2)
    val_acc = [float((reused_final(manifest, val_l, w) == val_y).mean()) for w in grid]
    w = float(grid[int(np.argmax(val_acc))])  # the smallest w among the best
    final = reused_final(manifest, test_l, w)
    reuse_val = cal.choose(reuse_sweep(manifest, val_l, val_y, w), 1.0, cal.DEFAULT_MARGIN_SIGMA)[0]
    cls0, s0 = policy.exit_scores(manifest["exits"][0], test_l[0])
    go = s0 >= reuse_val["threshold_q15"]
    out["reuse"] = {"w": w, "weight_q8": int(round(256 * w * reuse_weights(manifest)[1][0] / reuse_weights(manifest)[1][1])),
                    "val_final_accuracy": [val_acc[0], max(val_acc)],
                    "test_final_accuracy": [out["exit_accuracy"][1], float((final == test_y).mean())],
                    "calibrated": [float((np.where(go, cls0, final) == test_y).mean()),
                                   float(cost[0] + (1 - go.mean()) * (cost[1] - cost[0]))],
                    "best_at_equal_accuracy": cal.best_at_accuracy(curve(manifest, test_l, test_y, cost,
                                                                         final_pred=final), reference[0], TOLERANCE_PP)}

    # gate: trained on the training split's exit outcomes
    train_l, train_f, train_y = data["train"]
    gate = fit_gate(pooled(train_f), (train_l[0].argmax(1) == train_y).astype(np.float64))
    p = gate(pooled(test_f))
    right0 = test_l[0].argmax(1) == test_y
    pool = next(l for l in counts["stage0_layers"] if l["head"] and l["op"] == "AVERAGE_POOL_2D")
    gate_cost = pool["instructions"] / pool["input_values"] * int(np.prod(test_f.shape[1:])) + 2 * test_f.shape[-1] * 4
    exit_rate = (s0 >= plain["threshold_q15"]).mean()
    best_gated = None
    for g in np.quantile(p, np.linspace(0.01, 0.5, 50)):  # the gate skips 1% .. 50% of the heads
        b = cal.best_at_accuracy(curve(manifest, test_l, test_y, cost, gate=p >= g, head=counts["head"],
                                       gate_cost=gate_cost), reference[0], TOLERANCE_PP)
        if b is not None and (best_gated is None or b[1] < best_gated[1]):
            best_gated = b
    out["gate"] = {"train_positive_rate": float((train_l[0].argmax(1) == train_y).mean()),
                   "auc_gate": auc(p, right0), "auc_max_prob_score": auc(s0.astype(np.float64), right0),
                   "head_instructions": counts["head"], "head_share_of_stage0": counts["head"] / counts["stage"][0],
                   "gate_instructions_estimate": float(gate_cost),
                   "perfect_free_gate_saving": float((1 - exit_rate) * counts["head"] / reference[1]),
                   "best_costed_gate_at_equal_accuracy": best_gated}
    return out


def reuse_sweep(manifest, logits, y, w):
    """calibrate.sweep's rows with the reused final exit (max_prob on exit 0, one early exit)."""
    cls0, s0 = policy.exit_scores(manifest["exits"][0], logits[0])
    final = reused_final(manifest, logits, w)
    right_final = (final == y).astype(np.float64)
    rows = []
    for t in np.unique(np.r_[s0, policy.NEVER])[::-1]:
        go = s0 >= t
        ok = np.where(go, cls0, final) == y
        rows.append({"kind": "max_prob", "threshold_q15": int(t), "accuracy": float(ok.mean()),
                     "drop_se": float((right_final - ok).std(ddof=1) / np.sqrt(len(y))), "macs_mean": float(1 - go.mean())})
    return rows


def table(r: dict) -> str:
    ref = r["max_prob_chosen"]
    h = r["headroom"]

    def saving(p):
        return "-" if p is None else f"{1 - p[1] / ref[1]:+.1%} ({100 * p[0]:.2f}%)"

    lines = [f"## {r['task']} ({r['n_test']} test samples); qemu-m4 instructions per stage {r['instructions']['stage']}",
             f"max_prob, plain calibration (q15 {r['max_prob_threshold_q15']}): {100 * ref[0]:.2f}%, {ref[1]:,.0f}",
             "policy at equal accuracy (-0.2 pp), saving vs that: " +
             ", ".join(f"{k} {saving(p)}" for k, p in r["policies"].items()),
             f"floor (all leave at exit 0): {h['floor']['saving']:.1%} at {100 * h['floor']['accuracy']:.2f}%; oracle "
             f"at equal accuracy: {h['oracle_equal_accuracy']['saving']:.1%}; oracle: {h['oracle']['saving']:.1%} at "
             f"{100 * h['oracle']['accuracy']:.2f}%",
             f"reuse: w {r['reuse']['w']} (Q8 {r['reuse']['weight_q8']}); final exit alone val "
             f"{r['reuse']['val_final_accuracy'][0]:.2%} -> {r['reuse']['val_final_accuracy'][1]:.2%}, test "
             f"{r['reuse']['test_final_accuracy'][0]:.2%} -> {r['reuse']['test_final_accuracy'][1]:.2%}; calibrated "
             f"{100 * r['reuse']['calibrated'][0]:.2f}% at {r['reuse']['calibrated'][1]:,.0f}; at equal accuracy "
             f"{saving(r['reuse']['best_at_equal_accuracy'])}",
             f"gate: AUC for 'exit 0 right' {r['gate']['auc_gate']:.3f} (max_prob score {r['gate']['auc_max_prob_score']:.3f}); "
             f"head {r['gate']['head_instructions']:,.0f} ({r['gate']['head_share_of_stage0']:.1%} of stage 0), gate "
             f"~{r['gate']['gate_instructions_estimate']:,.0f}; a perfect free gate saves "
             f"{r['gate']['perfect_free_gate_saving']:.2%}; best costed gate at equal accuracy "
             f"{saving(r['gate']['best_costed_gate_at_equal_accuracy'])}"]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="tinyexit demo output folders (export/ inside)")
    p.add_argument("--samples", type=int, default=10, help="validation inputs profiled on qemu-m4 (default 10)")
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args()
    results = []
    for run in args.runs:
        results.append(analyse(run, args.samples))
        print(table(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
