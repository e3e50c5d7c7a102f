"""Exit placement analysis: for each block an exit could follow, what accuracy an exit there reaches and
what it costs to reach it.

The backbone is trained once without exits (or comes pretrained), then frozen; a T-RECX head is trained
after every candidate block at once (heads do not interact when the backbone is frozen). Each candidate is exported to int8
stages and calibrated on the validation split exactly as a real model would be, which gives the MAC
ratio that placement would achieve at the accuracy budget.

MACs misprice early exits on a microcontroller: the first layers (few channels, large images) cost more
instructions per MAC than the wide ones an exit skips. So where the ARM toolchain and QEMU are installed,
each candidate's stages and the network without exits are also built and run once on the emulated
Cortex-M4 (`-icount`, early exits off), and the recommendation is the lowest projected *instruction* ratio
(measured: HAR's exits after blocks 1 and 2 project MAC ratios 0.406 / 0.401 but instruction ratios 0.507 /
0.480; on MLPerf's VWW MobileNet an exit after block 1 projects 1.18 in MACs, 1.35 in instructions). Without
them the MAC ratio decides, and the table says so.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from tinyexit import atomic, models
from tinyexit.data import Dataset

PRICE_TARGET = "qemu-m4"  # where the instruction counts come from


def analyse(ds: Dataset, out_dir: Path, epochs: int = 30, head_epochs: int = 15, budget_pp: float = 1.0,
            seed: int = 0, verbose: int | None = None, pretrained=None, executor=None) -> dict:
    """Placement analysis of the task's own backbone (trained here) or of a `pretrained` Keras model
    (candidates: the end of every depthwise-separable block but the last two). executor: where the candidates'
    firmware runs, side by side (tinyexit.cluster; default: this machine's cores)."""
    from tinyexit.export import macs_of
    from tinyexit.measure import keras_verbosity
    from tinyexit.train import train

    verbose = keras_verbosity() if verbose is None else verbose
    if pretrained is None:
        base = models.default_spec(ds.task, ds.classes, ds.train.x.shape[1:], ds.preprocessing)
        candidates = list(range(1, len(base.blocks)))
        backbone_spec = replace(base, exits_after=[], early_view_assist=False)
        backbone = train(backbone_spec, ds, epochs=epochs, seed=seed, verbose=verbose)
        heads_spec = replace(base, exits_after=candidates, early_view_assist=False)
        heads = models.build(heads_spec)
        for layer in heads.layers:
            if not layer.name.startswith("exit") and layer.weights:
                layer.set_weights(backbone.get_layer(layer.name).get_weights())
                layer.trainable = False
        cut_layers = [f"block{b}" for b in candidates]
        macs_no_exit = macs_of(models.backbone_only(base))
        heads = train(heads_spec, ds, epochs=head_epochs, seed=seed, verbose=verbose, model=heads,
                      early_exit_weight=1.0)
    else:
        from tinyexit import retrofit

        cut_layers = retrofit.separable_block_outputs(pretrained)[:-2]
        candidates = list(range(1, len(cut_layers) + 1))
        macs_no_exit = macs_of(pretrained)
        heads, heads_spec = retrofit.attach_exits(pretrained, cut_layers, ds.task, ds.classes, ds.preprocessing)
        heads = retrofit.train_heads(heads, heads_spec, ds, epochs=head_epochs, seed=seed, verbose=verbose)
    no_exit_model = pretrained if pretrained is not None else backbone
    with tempfile.TemporaryDirectory() as tmp:
        exported = [_export_candidate(heads, heads_spec, (cut, f"exit{j}"), ds, macs_no_exit, seed, Path(tmp) / str(j))
                    for j, cut in enumerate(cut_layers)]
        priced = _price(no_exit_model, exported, ds, seed, Path(tmp), executor) if can_price_instructions() else None
    instructions_no_exit = priced[0] if priced else None
    rows = [dict(block=b, cut=cut, head=f"exit{j}",
                 **_candidate(manifest, logits, ds, macs_no_exit, budget_pp, priced[1][j] if priced else None,
                              instructions_no_exit))
            for j, (b, cut, (manifest, logits)) in enumerate(zip(candidates, cut_layers, exported))]
    price = "projected_instruction_ratio" if instructions_no_exit else "projected_mac_ratio"
    best = min(rows, key=lambda r: r[price])
    result = {"task": ds.task, "budget_pp": budget_pp, "macs_no_exit": int(macs_no_exit),
              "priced_by": price, "instructions_no_exit": instructions_no_exit, "candidates": rows,
              "recommended_exits_after": [best["block"]], "recommended_cut": best["cut"]}
    plot(result, out_dir / "placement.png")
    return result, (heads, heads_spec)


def single_exit(heads_and_spec, row: dict):
    """The analysed network reduced to one candidate exit: the measured head itself, not a retrained one."""
    import keras

    heads, spec = heads_and_spec
    model = keras.Model(heads.inputs, [heads.get_layer(row["head"]).output, heads.get_layer("final").output],
                        name=f"{spec.task}_exit_{row['cut']}")
    return model, replace(spec, cuts=[[row["cut"], row["head"]]], exits_after=[])


def can_price_instructions() -> bool:
    """Whether candidates can be run on PRICE_TARGET here (its cross-compiler and QEMU are installed)."""
    from tinyexit.firmware_build import TARGETS

    return all(shutil.which(tool) for tool in (TARGETS[PRICE_TARGET]["compiler"], "qemu-system-arm"))


def _export_candidate(heads, heads_spec, cut: tuple[str, str], ds: Dataset, macs_no_exit: int, seed: int,
                      folder: Path) -> tuple[dict, list]:
    """One candidate exit as real int8 stages in `folder`: (its manifest, its exits' logits on validation)."""
    from tinyexit.export import export
    from tinyexit.reference import all_exit_logits, quantize_input

    manifest = export(heads, heads_spec, ds.train.subset(300, seed).x, folder, macs_no_exit=macs_no_exit, cuts=[cut])
    manifest["_dir"] = str(folder)
    return manifest, all_exit_logits(manifest, quantize_input(manifest, ds.val.x))


def _price(no_exit_model, exported: list[tuple[dict, list]], ds: Dataset, seed: int, tmp: Path,
           executor) -> tuple[float, list[list[float]]]:
    """The network without exits (quantized to int8 as one plain .tflite) and each candidate's stages, run once
    on PRICE_TARGET with early exits off, side by side on the executor: (instructions without exits, each
    candidate's instructions per stage)."""
    from tinyexit.export import convert_int8
    from tinyexit.measure import REPRESENTATIVE_SAMPLES, measure_many
    from tinyexit.reference import quantize_input
    from tinyexit.tflite_graph import Graph

    buf = convert_int8(no_exit_model, ds.train.subset(REPRESENTATIVE_SAMPLES, seed).x)
    graph = Graph(buf, "the network without exits")
    no_exit = tmp / "no_exit.tflite"
    no_exit.write_bytes(buf)
    models = [(no_exit, quantize_input({"input": graph.tensors[graph.inputs[0]].describe()}, ds.val.x[:1]))]
    models += [(Path(manifest["_dir"]), quantize_input(manifest, ds.val.x[:1])) for manifest, _ in exported]
    counts = measure_many(models, PRICE_TARGET, samples=1, executor=executor)
    return float(sum(counts[0]["stage"])), [c["stage"] for c in counts[1:]]


def _candidate(manifest: dict, logits: list, ds: Dataset, macs_no_exit: int, budget_pp: float,
               stage_instructions: list[float] | None, instructions_no_exit: float | None) -> dict:
    """One exported candidate calibrated on the validation split; with its measured `stage_instructions`,
    also the instruction ratio it projects."""
    from tinyexit.calibrate import choose, sweep

    chosen, final_acc = choose(sweep(manifest, logits, ds.val.y), budget_pp)
    priced = {}
    if stage_instructions:
        to_exit, all_stages = stage_instructions[0], sum(stage_instructions)
        rate = chosen["exit_rates"][0]
        priced = {"instructions_to_exit": round(to_exit),
                  "projected_instruction_ratio": (rate * to_exit + (1 - rate) * all_stages) / instructions_no_exit}
    return {
        "macs_to_exit": int(manifest["cost"]["macs_to_exit"][0]),
        "fraction_of_backbone": manifest["cost"]["macs_to_exit"][0] / macs_no_exit,
        "exit_accuracy": float((logits[0].argmax(1) == ds.val.y).mean()),
        "final_accuracy": float(final_acc),
        "early_exit_rate": chosen["exit_rates"][0],
        "projected_mac_ratio": chosen["macs_mean"] / macs_no_exit,
        **priced,
        "projected_accuracy": chosen["accuracy"],
    }


def table(result: dict) -> str:
    priced = result.get("priced_by") == "projected_instruction_ratio"
    lines = [f"{'block':>5} {'MACs to exit':>12} {'of backbone':>11} {'exit acc':>8} {'exit rate':>9} "
             f"{'MAC ratio':>9}" + (f" {'instr ratio':>11}" if priced else "") + f" {'acc':>6}"]
    for r in result["candidates"]:
        mark = "  <- recommended" if [r["block"]] == result["recommended_exits_after"] else ""
        lines.append(f"{r['block']:>5} {r['macs_to_exit']:>12,} {r['fraction_of_backbone']:>10.1%} "
                     f"{r['exit_accuracy']:>8.1%} {r['early_exit_rate']:>9.1%} {r['projected_mac_ratio']:>9.3f}"
                     + (f" {r['projected_instruction_ratio']:>11.3f}" if priced else "")
                     + f" {r['projected_accuracy']:>6.1%}{mark}")
    lines.append(f"(validation split; ratios and accuracy at the cheapest threshold within "
                 f"{result['budget_pp']:g} pp of the final exit; backbone {result['macs_no_exit']:,} MACs"
                 + (f", {result['instructions_no_exit']:,.0f} {PRICE_TARGET} instructions; recommended: the "
                    f"lowest instruction ratio)" if priced else
                    f"; recommended: the lowest MAC ratio ({PRICE_TARGET} toolchain or QEMU not installed))"))
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
    key, unit = (("projected_instruction_ratio", "instr.") if result.get("priced_by") == "projected_instruction_ratio"
                 else ("projected_mac_ratio", "MAC"))
    for r in rows:
        ax.annotate(f"block {r['block']}\n{unit} ratio {r[key]:.2f}",
                    (r["macs_to_exit"], 100 * r["exit_accuracy"]), textcoords="offset points", xytext=(4, -22),
                    fontsize=7)
    ax.set_xlabel("MACs to reach the exit (backbone so far + head)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"exit placement ({result['task']}), backbone {result['macs_no_exit']:,} MACs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    atomic.savefig(fig, path)
    plt.close(fig)
