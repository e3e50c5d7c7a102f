"""Exit placement analysis: for each block an exit could follow, what accuracy an exit there reaches and
what it costs to reach it.

The backbone is trained once without exits, then frozen; a T-RECX head is trained after every candidate
block at once (heads do not interact when the backbone is frozen). Each candidate is exported to int8
stages and calibrated on the validation split exactly as a real model would be, which gives the MAC
ratio that placement would achieve at the accuracy budget.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from tinyexit import models
from tinyexit.data import Dataset


def analyse(ds: Dataset, out_dir: Path, epochs: int = 30, head_epochs: int = 15, budget_pp: float = 1.0,
            seed: int = 0, verbose: int | None = None) -> dict:
    from tinyexit.calibrate import choose, sweep
    from tinyexit.pipeline import keras_verbosity
    from tinyexit.export import export, macs_of
    from tinyexit.reference import all_exit_logits, quantize_input
    from tinyexit.train import train

    base = models.default_spec(ds.task, ds.classes, ds.train.x.shape[1:], ds.preprocessing)
    candidates = list(range(1, len(base.blocks)))
    verbose = keras_verbosity() if verbose is None else verbose
    backbone_spec = replace(base, exits_after=[], early_view_assist=False)
    backbone = train(backbone_spec, ds, epochs=epochs, seed=seed, verbose=verbose)

    heads_spec = replace(base, exits_after=candidates, early_view_assist=False)
    heads = models.build(heads_spec)
    for layer in heads.layers:
        if not layer.name.startswith("exit") and layer.weights:
            layer.set_weights(backbone.get_layer(layer.name).get_weights())
            layer.trainable = False
    heads = train(heads_spec, ds, epochs=head_epochs, seed=seed, verbose=verbose, model=heads)

    macs_no_exit = macs_of(models.backbone_only(base))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for j, block in enumerate(candidates):
            manifest = export(heads, heads_spec, ds.train.subset(300, seed).x, Path(tmp) / f"b{block}",
                              macs_no_exit=macs_no_exit, cuts=[(f"block{block}", f"exit{j}")])
            manifest["_dir"] = str(Path(tmp) / f"b{block}")
            logits = all_exit_logits(manifest, quantize_input(manifest, ds.val.x))
            chosen, final_acc = choose(sweep(manifest, logits, ds.val.y), budget_pp)
            rows.append({
                "block": block,
                "macs_to_exit": int(manifest["cost"]["macs_to_exit"][0]),
                "fraction_of_backbone": manifest["cost"]["macs_to_exit"][0] / macs_no_exit,
                "exit_accuracy": float((logits[0].argmax(1) == ds.val.y).mean()),
                "final_accuracy": float(final_acc),
                "early_exit_rate": chosen["exit_rates"][0],
                "projected_mac_ratio": chosen["macs_mean"] / macs_no_exit,
                "projected_accuracy": chosen["accuracy"],
            })
    best = min(rows, key=lambda r: r["projected_mac_ratio"])
    result = {"task": ds.task, "budget_pp": budget_pp, "macs_no_exit": int(macs_no_exit), "candidates": rows,
              "recommended_exits_after": [best["block"]]}
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(result, out_dir / "placement.png")
    return result


def table(result: dict) -> str:
    lines = [f"{'block':>5} {'MACs to exit':>12} {'of backbone':>11} {'exit acc':>8} {'exit rate':>9} "
             f"{'MAC ratio':>9} {'acc':>6}"]
    for r in result["candidates"]:
        mark = "  <- recommended" if [r["block"]] == result["recommended_exits_after"] else ""
        lines.append(f"{r['block']:>5} {r['macs_to_exit']:>12,} {r['fraction_of_backbone']:>10.1%} "
                     f"{r['exit_accuracy']:>8.1%} {r['early_exit_rate']:>9.1%} {r['projected_mac_ratio']:>9.3f} "
                     f"{r['projected_accuracy']:>6.1%}{mark}")
    lines.append(f"(validation split; MAC ratio and accuracy at the cheapest threshold within "
                 f"{result['budget_pp']:g} pp of the final exit; backbone {result['macs_no_exit']:,} MACs)")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["candidates"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    x = [r["macs_to_exit"] for r in rows]
    ax.plot(x, [100 * r["exit_accuracy"] for r in rows], "o-", label="exit accuracy (validation)")
    ax.axhline(100 * rows[0]["final_accuracy"], color="gray", ls="--", lw=1, label="final exit")
    for r in rows:
        ax.annotate(f"block {r['block']}\nratio {r['projected_mac_ratio']:.2f}",
                    (r["macs_to_exit"], 100 * r["exit_accuracy"]), textcoords="offset points", xytext=(4, -22),
                    fontsize=7)
    ax.set_xlabel("MACs to reach the exit (backbone so far + head)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"exit placement ({result['task']}), backbone {result['macs_no_exit']:,} MACs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
