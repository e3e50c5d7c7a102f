"""The steps users run one by one (`tinyexit train/export/calibrate/evaluate`) or all at once (`demo`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from tinyexit import atomic
from tinyexit import data as data_mod
from tinyexit import manifest as mf
from tinyexit import models
from tinyexit.data import Dataset, Split
from tinyexit.errors import TinyexitError
from tinyexit.measure import MEASURE_SAMPLES, REPRESENTATIVE_SAMPLES, keras_verbosity, measure_instructions

DEFAULT_EPOCHS = 30


def load_data(task: str, path: str | None) -> Dataset:
    return data_mod.load(task, path)


def train(ds: Dataset, out_dir: Path, exits_after: list[int] | None = None, epochs: int = DEFAULT_EPOCHS,
          early_exit_weight: float = 0.3, seed: int = 0, verbose: int | None = None):
    from tinyexit.train import train as fit

    spec = models.default_spec(ds.task, ds.classes, ds.train.x.shape[1:], ds.preprocessing, exits_after)
    spec.validate()
    model = fit(spec, ds, epochs=epochs, early_exit_weight=early_exit_weight, seed=seed,
                verbose=keras_verbosity() if verbose is None else verbose)
    models.save(model, spec, out_dir)
    return model, spec


def export(model, spec, ds: Dataset, out_dir: Path, seed: int = 0, macs_no_exit: int | None = None,
           weight_bits: dict[str, int] | None = None, int4_tensors: bool = False) -> dict:
    """int8 stages + manifest; `macs_no_exit` defaults to the network without exits: the spec's backbone
    built bare, or for a retrofit the pretrained path to the final output. `weight_bits`: per-layer widths of
    a fake-quantized model (tinyexit/qat.py)."""
    from tinyexit.export import export as export_stages, macs_of

    representative = ds.train.subset(REPRESENTATIVE_SAMPLES, seed).x
    if macs_no_exit is None:
        macs_no_exit = macs_of(bare_model(model, spec))
    return export_stages(model, spec, representative, out_dir, macs_no_exit=macs_no_exit, weight_bits=weight_bits,
                        int4_tensors=int4_tensors)


def bare_model(model, spec):
    """The network without exits, the cost baseline: for a retrofit, the pretrained path to the final
    output; otherwise the backbone built bare, with the trained weights wherever the shapes agree."""
    import keras

    if spec.cuts:
        return keras.Model(model.inputs, model.get_layer("final").output, name=f"{spec.task}_no_exit")
    bare = models.backbone_only(spec)
    for layer in bare.layers:
        try:
            source = model.get_layer(layer.name)
        except ValueError:
            continue
        if [w.shape for w in source.get_weights()] == [w.shape for w in layer.get_weights()]:
            layer.set_weights(source.get_weights())
    return bare


def firmware_run(out: Path, model, spec, ds: Dataset, target: str = "qemu-m4", samples: int | None = None,
                 seed: int = 0, executor=None) -> dict:
    """The exported stages on the firmware (emulated Cortex-M4 by default) over the test split, checked
    against TFLite Micro, and the same network without exits for the instruction baseline. executor: a
    tinyexit.cluster executor to run the firmware on (default: this machine's cores)."""
    from tinyexit.export import convert_int8
    from tinyexit.reference import all_exit_logits, decide, quantize_input
    from tinyexit.sim import simulate

    manifest = mf.read(out / "export")
    split = ds.test if samples is None else ds.test.subset(samples, seed)
    x = quantize_input(manifest, split.x)
    result, summary = simulate(out / "export", target, x, split.y, out / "firmware" / target, executor=executor)
    reference = decide(manifest, all_exit_logits(manifest, x))
    mismatches = int(np.sum((result["exit"] != reference.exit) | (result["pred"] != reference.pred)))
    bare = convert_int8(bare_model(model, spec), ds.train.subset(REPRESENTATIVE_SAMPLES, seed).x)
    atomic.write_bytes(out / "firmware" / "no_exit.tflite", bare)
    x_bare = np.clip(np.round(split.x[:20] / manifest["input"]["scale"]) + manifest["input"]["zero_point"], -128, 127)
    _, base = simulate(out / "firmware" / "no_exit.tflite", target, x_bare.astype(np.int8), None,
                       out / "firmware" / f"{target}-no-exit", progress=False, executor=executor)
    return {
        "firmware_target": target,
        "firmware_samples": int(len(x)),
        "firmware_mismatches_vs_tflm": mismatches,
        "firmware_accuracy": summary["accuracy"],
        "instruction_unit": summary["cycle_unit"],
        "instructions_mean": summary["mean_instructions"],
        "instructions_no_exit": base["mean_instructions"],
        "instructions_ratio": summary["mean_instructions"] / base["mean_instructions"],
        "instructions_per_mac_no_exit": base["instructions_per_mac"],
        "instructions_all_stages": summary["instructions_no_exit"],  # these stages, every exit switched off
        # instructions to reach each stage's exit (stages measured one by one on the no-exit path)
        "instructions_to_exit": np.cumsum(summary["stage_instructions"]).tolist(),
        "firmware_arena_bytes": summary["peak_activation_bytes"],
    }


def check_input(manifest: dict, split: Split) -> None:
    want = tuple(manifest["input"]["shape"][1:])
    if tuple(split.x.shape[1:]) != want:
        raise TinyexitError(f"data has input shape {tuple(split.x.shape[1:])}, the model expects {want}")


def validation_arrays(manifest: dict, ds: Dataset | None, arrays: tuple[np.ndarray, np.ndarray] | None = None):
    """(int8 inputs, labels) to calibrate on: `arrays` as given (checked by tinyexit.inputs), else the
    dataset's validation split quantized with the manifest's input scale and zero point."""
    from tinyexit.reference import quantize_input

    if arrays is not None:
        return arrays
    check_input(manifest, ds.val)
    return quantize_input(manifest, ds.val.x), ds.val.y


def calibrate(export_dir: Path, ds: Dataset | None, budget_pp: float = 1.0, out_dir: Path | None = None,
              progress: bool = True, margin_sigma: float | None = None, kinds: tuple[str, ...] = ("max_prob",),
              arrays: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """`arrays`: (int8 inputs, labels) to calibrate on instead of the dataset's validation split."""
    from tinyexit.calibrate import DEFAULT_MARGIN_SIGMA
    from tinyexit.calibrate import calibrate as run
    from tinyexit.reference import all_exit_logits

    manifest = mf.read(export_dir)
    x, y = validation_arrays(manifest, ds, arrays)
    logits = all_exit_logits(manifest, x, progress=progress)
    return run(manifest, logits, y, budget_pp, Path(out_dir or export_dir),
               DEFAULT_MARGIN_SIGMA if margin_sigma is None else margin_sigma, tuple(kinds))


def calibrate_target(export_dir: Path, ds: Dataset | None, target, board=None, out_dir: Path | None = None,
                     margin_sigma: float | None = None, kinds: tuple[str, ...] = ("max_prob",), measure: bool = False,
                     cost_target: str = "qemu-m4", progress: bool = True,
                     arrays: tuple[np.ndarray, np.ndarray] | None = None, executor=None) -> dict:
    """`tinyexit calibrate --target`: price candidates in `cost_target`'s measured instructions (from the
    manifest, measured first when absent or when `measure`, and stored with the chosen policy), choose for
    `target` (tinyexit.calibrate.Target), write the policy into the manifest. `arrays`: see calibrate.
    executor: where the measuring firmware runs (tinyexit.cluster; default: this machine)."""
    from tinyexit import calibrate as cal
    from tinyexit.reference import all_exit_logits

    manifest = mf.read(export_dir)
    x, y = validation_arrays(manifest, ds, arrays)
    stored = manifest["cost"].get("instructions", {}).get(cost_target)
    if stored is None or measure or len(stored.get("stage", [])) != len(manifest["stages"]):
        if progress:
            print(f"measuring each stage's instructions on {cost_target} ({MEASURE_SAMPLES} validation samples, "
                  f"early exits off)")
        stored = measure_instructions(export_dir, cost_target, x, executor=executor)
        # saved with the policy at the end, so a failing calibration leaves the manifest as it was
        manifest["cost"].setdefault("instructions", {})[cost_target] = stored
    logits = all_exit_logits(manifest, x, progress=progress)
    summary = cal.calibrate_target(manifest, logits, y, target, stored, Path(out_dir or export_dir),
                                   cal.DEFAULT_MARGIN_SIGMA if margin_sigma is None else margin_sigma, tuple(kinds),
                                   board, cost_target)
    return summary


def evaluate(export_dir: Path, split: Split, backend: str = "tflm", progress: bool = True) -> dict:
    """Accuracy of the int8 stages at the manifest's thresholds, and of the final exit alone."""
    from tinyexit.reference import quantize_input

    manifest = mf.read(export_dir)
    check_input(manifest, split)
    return evaluate_arrays(export_dir, quantize_input(manifest, split.x), split.y, backend, progress)


def evaluate_arrays(export_dir: Path, x_q: np.ndarray, y: np.ndarray, backend: str = "tflm",
                    progress: bool = True) -> dict:
    """`evaluate` on int8 inputs as the model takes them (e.g. from `tinyexit inputs`) and their labels."""
    from tinyexit.reference import all_exit_logits, decide

    manifest = mf.read(export_dir)
    logits = all_exit_logits(manifest, x_q, backend, progress=progress)
    r = decide(manifest, logits)
    macs_no_exit = manifest["cost"].get("macs_no_exit") or manifest["cost"]["macs_all_stages"]
    early = [e for e in manifest["exits"] if not e["final"]]
    return {
        "n": int(len(y)),
        "int8_final_accuracy": float((logits[-1].argmax(1) == y).mean()),
        "int8_early_exit_accuracy": float((r.pred == y).mean()),
        "int8_exit_accuracies": [float((l.argmax(1) == y).mean()) for l in logits],
        "early_exit_rate": float((r.exit != len(manifest["exits"]) - 1).mean()),
        "exit_histogram": np.bincount(r.exit, minlength=len(manifest["exits"])).tolist(),
        "threshold": (early[0]["policy"] or {}).get("threshold") if early else None,  # null policy: never
        "threshold_q15": (early[0]["policy"] or {}).get("threshold_q15") if early else None,
        "macs_no_exit": int(macs_no_exit),
        "macs_mean": float(r.macs.mean()),
        "mac_ratio": float(r.macs.mean() / macs_no_exit),
    }


def interpreter_agreement(export_dir: Path, split: Split) -> dict:
    """Share of samples whose every output of every stage is identical in LiteRT and in TFLite Micro
    (default LiteRT kernels and its BUILTIN_REF kernels), stage by stage."""
    from tinyexit.reference import load_stages, quantize_input

    manifest = mf.read(export_dir)
    x = quantize_input(manifest, split.x)
    backends = {b: load_stages(manifest, b) for b in ("tflm", "litert", "litert-ref")}
    same = {b: np.zeros(len(manifest["stages"])) for b in ("litert", "litert-ref")}
    for n in range(len(x)):
        feature = {b: x[n:n + 1] for b in backends}
        for k in range(len(manifest["stages"])):
            ref = backends["tflm"][k](x[n:n + 1] if k == 0 else feature["tflm"])
            for b in same:
                # each backend is fed TFLite Micro's own input to the stage, so stages are compared alone
                outs = backends[b][k](x[n:n + 1] if k == 0 else feature["tflm"])
                same[b][k] += all(np.array_equal(o, r) for o, r in zip(outs, ref))
            feature["tflm"] = ref[0]
    return {f"{b}_vs_tflm": (same[b] / len(x)).round(6).tolist() for b in same} | {"n": int(len(x))}


def float_metrics(model, split: Split, manifest: dict) -> dict:
    """The float Keras model, final exit alone and with the same policy and threshold as the int8 model."""
    from tinyexit.policy import float_score, kind_of
    from tinyexit.train import predict_logits

    logits = predict_logits(model, split.x)
    taken = np.full(len(split), len(logits) - 1)
    for j, e in enumerate(manifest["exits"][:-1]):
        conf = float_score(kind_of(e), logits[j], 1.0)
        go = (taken == len(logits) - 1) & (conf >= (e["policy"] or {"threshold": 2.0})["threshold"])
        taken[go] = j
    pred = np.choose(taken, [l.argmax(1) for l in logits])
    return {"float_accuracy": float((logits[-1].argmax(1) == split.y).mean()),
            "float_early_exit_accuracy": float((pred == split.y).mean()),
            "float_exit_accuracies": [float((l.argmax(1) == split.y).mean()) for l in logits]}


def policy_curves(export_dir: Path, split: Split, instructions_to_exit: list[float], budget_pp: float,
                  out_png: Path | None = None) -> dict:
    """Every policy kind's threshold sweep on `split`, as [accuracy, mean instructions] points (instructions
    per exit path as measured on the firmware), the policy the calibration chose, and max_prob at the threshold
    plain max-probability calibration picks (same validation rule)."""
    from tinyexit import calibrate as cal
    from tinyexit import policy
    from tinyexit.reference import all_exit_logits, decide, quantize_input

    manifest = mf.read(export_dir)
    logits = all_exit_logits(manifest, quantize_input(manifest, split.x))
    cost = np.asarray(instructions_to_exit)
    stage_of = [e["stage"] for e in manifest["exits"]]

    def point(row: dict) -> list[float]:
        thresholds = [0 if e["final"] else row["threshold_q15"] for e in manifest["exits"]]
        r = decide(manifest, logits, thresholds, row["kind"])
        return [float((r.pred == split.y).mean()), float(cost[[stage_of[i] for i in r.exit]].mean())]

    curves = {kind: sorted((point(r) for r in cal.sweep(manifest, logits, split.y, kind)), key=lambda p: p[1])
              for kind in policy.KINDS}
    val = json.loads((Path(export_dir) / "sweep.json").read_text())
    plain, _ = cal.choose([r for r in val["rows"] if r["kind"] == "max_prob"], budget_pp, val["margin_sigma"])
    chosen = manifest["exits"][0]["policy"]
    r = decide(manifest, logits)  # the manifest's own policy, per-exit thresholds and all
    result = {"policy": chosen, "policy_curves": curves, "max_prob_chosen": point(plain),
              "policy_chosen": [float((r.pred == split.y).mean()), float(cost[[stage_of[i] for i in r.exit]].mean())]}
    # the bar: fewest instructions each policy needs at max_prob's accuracy (-0.2 pp; points picked on this
    # split, so an upper bound on what calibration finds), against what perfect exit decisions could reach
    reference = result["max_prob_chosen"]
    best = {kind: cal.best_at_accuracy(pts, reference[0]) for kind, pts in curves.items()}
    result["policy_headroom"] = {
        **cal.headroom(logits, split.y, cost[stage_of], reference),
        "best_at_equal_accuracy": {kind: {"accuracy": p[0], "instructions": p[1], "saving": 1 - p[1] / reference[1]}
                                   for kind, p in best.items() if p is not None}}
    if out_png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for kind, pts in curves.items():
            ax.plot([p[1] for p in pts], [100 * p[0] for p in pts], ".-", ms=3, lw=1, label=kind)
        ax.plot([result["max_prob_chosen"][1]], [100 * result["max_prob_chosen"][0]], "ks", ms=7,
                label="max_prob, plain calibration")
        ax.plot([result["policy_chosen"][1]], [100 * result["policy_chosen"][0]], "r*", ms=12,
                label=f"chosen: {chosen['kind']}")
        ax.set_xlabel("mean qemu-m4 instructions per inference")
        ax.set_ylabel(f"accuracy (%), {len(split)} test samples")
        ax.set_title(f"{manifest['task']}: exit policies")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        atomic.savefig(fig, out_png)
        plt.close(fig)
    return result


def write_json(path: Path, obj: dict) -> None:
    atomic.write_json(path, obj)


class Stopwatch:
    def __init__(self):
        self.start = time.time()

    def seconds(self) -> float:
        return round(time.time() - self.start, 1)


def finish(model, spec, ds: Dataset, out: Path, budget_pp: float = 1.0, seed: int = 0,
           agreement_samples: int = 300, clock: Stopwatch | None = None, macs_no_exit: int | None = None,
           extra: dict | None = None, step: int = 3, steps: int = 6, firmware_samples: int | None = None,
           quantized=None, weight_bits: dict[str, int] | None = None, executor=None) -> dict:
    """The common tail of every run: int8 export, calibration on validation, evaluation on test,
    report.json. Returns the report. `quantized`: a fake-quantized copy of `model` with per-layer
    `weight_bits` to export instead (float figures and the no-exit baseline stay the float model's).
    executor: see firmware_run."""
    from tinyexit.report import demo_table

    clock = clock or Stopwatch()
    print(f"[{step}/{steps}] int8 export")
    export(quantized or model, spec, ds, out / "export", seed, macs_no_exit=macs_no_exit, weight_bits=weight_bits)
    print(f"[{step + 1}/{steps}] calibration on the validation split")
    calibration = calibrate(out / "export", ds, budget_pp)
    print(f"[{step + 2}/{steps}] evaluation on the test split (TFLite Micro)")
    metrics = evaluate(out / "export", ds.test)
    print(f"[{step + 3}/{steps}] firmware on the emulated Cortex-M4 (qemu-m4, -icount) vs TFLite Micro")
    firmware = firmware_run(out, model, spec, ds, samples=firmware_samples, seed=seed, executor=executor)
    manifest = mf.read(out / "export")
    report = {
        "task": ds.task,
        "n_test": len(ds.test),
        **float_metrics(model, ds.test, manifest),
        **{k: v for k, v in metrics.items() if k != "n"},
        **firmware,
        "parameters": int(model.count_params()),
        "stage_macs": [s["macs"] for s in manifest["stages"]],
        "weight_bytes": {k: sum(s["weight_bytes"].get(k, 0) for s in manifest["stages"])
                         for k in ("int8", "int4", "int2", "bias")
                         if k in ("int8", "bias") or any(k in s["weight_bytes"] for s in manifest["stages"])},
        **(extra or {}),
        "validation": {"n": len(ds.val), "final_only_accuracy": calibration["final_only_accuracy"],
                       "early_exit_accuracy": calibration["chosen"]["accuracy"],
                       "macs_mean": calibration["chosen"]["macs_mean"]},
        **policy_curves(out / "export", ds.test, firmware["instructions_to_exit"], budget_pp, out / "policies.png"),
        "interpreter_agreement": interpreter_agreement(out / "export", ds.test.subset(agreement_samples, seed)),
        "seed": seed,
        "seconds": clock.seconds(),
    }
    write_json(out / "report.json", report)
    print(demo_table(report))
    return report


def retrofit(pretrained_path: Path, ds: Dataset, out: Path, after: list[str] | None = None, epochs: int | None = None,
             budget_pp: float = 1.0, seed: int = 0, agreement_samples: int = 300, search: bool = False,
             firmware_samples: int | None = None, executor=None) -> dict:
    """Freeze a pretrained model, train T-RECX heads at the chosen layers, then export, calibrate, report.
    `search`: choose the layer with the placement analysis instead of `after` / the T-RECX default.
    `epochs`: passes of head training over the augmented views (retrofit.train_heads). executor: see
    firmware_run."""
    from tinyexit import retrofit as rf

    clock = Stopwatch()
    epochs = epochs or rf.HEAD_EPOCHS
    pretrained = rf.load_pretrained(pretrained_path)
    check_input({"input": {"shape": [1, *pretrained.inputs[0].shape[1:]]}}, ds.train)
    print("[1/8] the pretrained model quantized to int8 as is (no exits), on the test split")
    pretrained_int8 = rf.int8_accuracy(pretrained, ds.train.subset(REPRESENTATIVE_SAMPLES, seed).x, ds.test.x, ds.test.y)
    placement = None
    if search:
        from tinyexit import place

        print("[2/8] exit placement analysis: a head after every separable block (backbone frozen)")
        placement, heads = place.analyse(ds, out / "place", head_epochs=epochs, budget_pp=budget_pp, seed=seed,
                                         pretrained=pretrained, executor=executor)
        write_json(out / "place" / "placement.json", placement)
        print(place.table(placement))
        best = next(r for r in placement["candidates"] if r["cut"] == placement["recommended_cut"])
        print(f"[3/8] keeping the head measured after {best['cut']}")
        model, spec = place.single_exit(heads, best)
        cuts = [best["cut"]]
    else:
        cuts = rf.choose_cuts(pretrained, after)
        print(f"[3/8] training exit heads after {cuts} (backbone frozen)")
        model, spec = rf.attach_exits(pretrained, cuts, ds.task, ds.classes, ds.preprocessing)
        model = rf.train_heads(model, spec, ds, epochs=epochs, seed=seed, verbose=keras_verbosity())
    models.save(model, spec, out / "model")
    return finish(model, spec, ds, out, budget_pp, seed, agreement_samples, clock, None,
                  extra={"pretrained": str(pretrained_path), "cuts": cuts, "int8_pretrained_accuracy": pretrained_int8,
                         "epochs": epochs, "placement": placement["candidates"] if placement else None},
                  step=4, steps=8, firmware_samples=firmware_samples, executor=executor)
