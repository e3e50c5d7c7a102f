"""Mixed-precision search: per-layer weight widths (8, 4, 2 bits) that keep validation accuracy highest
under a weight-flash budget.

Sensitivity-guided greedy: each layer's accuracy loss alone at 4 and at 2 bits (post-training rounding of
the int8 export to the least-squared-error grid, tinyexit/qat.py) ranks the moves "layer one width down" by
loss per byte saved; the moves are taken in that order, each configuration on the way measured for real,
down to every layer at 2 bits. The best measured configuration within the budget wins; quantization-aware
fine-tuning then recovers what rounding lost. Accuracy here is the mean over exits of each exit's own
validation accuracy (LiteRT, default kernels: fast, and only a ranking is needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyexit import atomic
from tinyexit.errors import TinyexitError


def filter_bytes(count: int, bits: int) -> int:
    return -(-count * bits // 8)


class Evaluator:
    """Mean per-exit validation accuracy of the unsplit int8 model with some filters narrowed."""

    def __init__(self, unsplit: bytes, n_exits: int, x_q: np.ndarray, y: np.ndarray):
        from tinyexit.tflite_graph import Graph, signature_outputs

        self.unsplit, self.x, self.y = unsplit, x_q, y
        self.logits = signature_outputs(Graph(unsplit))[n_exits:]
        self.cache: dict[tuple, float] = {}

    def __call__(self, tensor_bits: dict[str, int]) -> float:
        from ai_edge_litert.interpreter import Interpreter

        from tinyexit.qat import narrow_weights

        key = tuple(sorted((k, v) for k, v in tensor_bits.items() if v < 8))
        if key not in self.cache:
            buf = narrow_weights(self.unsplit, dict(key)) if key else self.unsplit
            it = Interpreter(model_content=buf)
            it.allocate_tensors()
            inp = it.get_input_details()[0]["index"]
            correct = np.zeros(len(self.logits))
            for x, y in zip(self.x, self.y):
                it.set_tensor(inp, x[None])
                it.invoke()
                correct += [int(np.argmax(it.get_tensor(t)) == y) for t in self.logits]
            self.cache[key] = float(correct.mean() / len(self.x))
        return self.cache[key]


def search(unsplit: bytes, n_exits: int, layers: dict[str, str], counts: dict[str, int], x_q: np.ndarray,
           y: np.ndarray, budget_bytes: int, progress: bool = True) -> dict:
    """layers: Keras layer name -> its weight tensor in `unsplit`; counts: layer -> number of weights."""
    evaluate = Evaluator(unsplit, n_exits, x_q, y)

    def config_bytes(bits: dict[str, int]) -> int:
        return sum(filter_bytes(counts[l], b) for l, b in bits.items())

    def measure(bits: dict[str, int]) -> dict:
        acc = evaluate({layers[l]: b for l, b in bits.items()})
        return {"bits": dict(bits), "weight_bytes": config_bytes(bits), "accuracy": acc}

    all8 = {l: 8 for l in layers}
    base = measure(all8)
    if progress:
        print(f"  all 8-bit: {base['weight_bytes']:,} weight bytes, validation accuracy {base['accuracy']:.2%}")
    loss = {}
    for l in layers:
        for b in (4, 2):
            loss[(l, b)] = base["accuracy"] - measure({**all8, l: b})["accuracy"]
    loss.update({(l, 8): 0.0 for l in layers})
    path = [base]
    bits = dict(all8)
    while any(b > 2 for b in bits.values()):
        def cost(l):  # accuracy lost per byte saved by taking layer l one width down
            new = {8: 4, 4: 2}[bits[l]]
            saved = filter_bytes(counts[l], bits[l]) - filter_bytes(counts[l], new)
            return (loss[(l, new)] - loss[(l, bits[l])]) / max(saved, 1)
        layer = min((l for l in bits if bits[l] > 2), key=cost)
        bits[layer] = {8: 4, 4: 2}[bits[layer]]
        path.append(measure(bits))
    uniform = [measure({l: b for l in layers}) for b in (4, 2)]
    within = [c for c in path + uniform if c["weight_bytes"] <= budget_bytes]
    if not within:
        raise TinyexitError(f"no configuration fits {budget_bytes:,} weight bytes (all 2-bit needs "
                            f"{uniform[-1]['weight_bytes']:,})")
    chosen = max(within, key=lambda c: (c["accuracy"], -c["weight_bytes"]))
    return {"budget_bytes": int(budget_bytes), "int8_weight_bytes": base["weight_bytes"], "all8": base,
            "sensitivity": [{"layer": l, "bits": b, "accuracy_loss": loss[(l, b)]} for l in layers for b in (4, 2)],
            "path": path, "uniform": uniform, "chosen": chosen}


def pareto_plot(result: dict, path: Path, title: str, extra: list[tuple[str, int, float]] = ()) -> Path:
    """Validation accuracy against weight bytes: the greedy path, uniform widths, the budget and the choice;
    `extra`: further labelled points (label, bytes, accuracy), e.g. after fine-tuning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pts = result["path"]
    ax.plot([p["weight_bytes"] for p in pts], [100 * p["accuracy"] for p in pts], "o-", ms=3,
            label="greedy path (post-training rounding)")
    for label, p in zip(("all 4-bit", "all 2-bit"), result["uniform"]):
        ax.plot(p["weight_bytes"], 100 * p["accuracy"], "s", label=label)
    ax.plot(result["all8"]["weight_bytes"], 100 * result["all8"]["accuracy"], "D", label="all 8-bit")
    c = result["chosen"]
    ax.plot(c["weight_bytes"], 100 * c["accuracy"], "*", ms=14, label="chosen")
    for label, nbytes, acc in extra:
        ax.plot(nbytes, 100 * acc, "P", ms=10, label=label)
    ax.axvline(result["budget_bytes"], color="grey", ls="--", label="budget")
    ax.set_xlabel("weight bytes (filters, packed)")
    ax.set_ylabel("validation accuracy, mean over exits (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic.savefig(fig, path, dpi=120)
    plt.close(fig)
    return path


def mixed_precision(model, spec, ds, out: Path, budget_bytes: int | None = None, qat_epochs: int = 6,
                    seed: int = 0, search_samples: int | None = None) -> dict:
    """Search widths under `budget_bytes` (default: half the int8 weight bytes) on the validation split,
    fine-tune the chosen configuration with fake quantization. Returns {search, bits, quantized model}."""
    from tinyexit import pipeline
    from tinyexit.export import convert_int8, export_model
    from tinyexit.qat import fine_tune, quantizable_layers, quantized_copy, weight_tensor_bits
    from tinyexit.reference import quantize_input
    from tinyexit.tflite_graph import Graph

    unsplit = convert_int8(export_model(model, spec), ds.train.subset(pipeline.REPRESENTATIVE_SAMPLES, seed).x)
    graph = Graph(unsplit, "converted model")
    names = quantizable_layers(model)
    tensors = {l: next(iter(weight_tensor_bits(graph, {l: 4}))) for l in names}
    by_name = {t.name: t for t in graph.tensors}
    counts = {l: int(np.prod(by_name[tensors[l]].shape)) for l in names}
    val = ds.val if search_samples is None else ds.val.subset(search_samples, seed)
    x_q = quantize_input({"input": graph.tensors[graph.inputs[0]].describe()}, val.x)
    int8_bytes = sum(counts.values())
    budget = int(budget_bytes if budget_bytes is not None else int8_bytes // 2)
    print(f"mixed-precision search over {len(names)} layers, budget {budget:,} weight bytes "
          f"(int8: {int8_bytes:,})")
    result = search(unsplit, spec.n_exits, tensors, counts, x_q, val.y, budget)
    bits = result["chosen"]["bits"]
    print(f"  chosen: {result['chosen']['weight_bytes']:,} bytes, validation accuracy "
          f"{result['chosen']['accuracy']:.2%} before fine-tuning; widths {bits}")
    quantized = quantized_copy(model, {l: b for l, b in bits.items() if b < 8})
    print(f"  quantization-aware fine-tuning, {qat_epochs} epochs")
    fine_tune(quantized, spec, ds, epochs=qat_epochs, seed=seed, verbose=pipeline.keras_verbosity())
    atomic.write_json(out / "search.json", result)
    return {"search": result, "bits": bits, "quantized": quantized}


def run_mixed(model, spec, ds, out: Path, budget_bytes: int | None, qat_epochs: int, seed: int,
              budget_pp: float = 1.0, firmware_samples: int | None = None, agreement_samples: int = 300,
              int8_report: dict | None = None, extra: dict | None = None) -> dict:
    """Search, fine-tune, then the usual export / calibration / evaluation / firmware tail on the mixed model;
    report.json gains the widths, weight bytes and (given `int8_report`) the all-8-bit figures."""
    from tinyexit import manifest as mf
    from tinyexit import pipeline
    from tinyexit.reference import quantize_input

    mp = mixed_precision(model, spec, ds, out, budget_bytes, qat_epochs, seed)
    report = pipeline.finish(model, spec, ds, out, budget_pp, seed, agreement_samples, macs_no_exit=None,
                             firmware_samples=firmware_samples, quantized=mp["quantized"], weight_bits=mp["bits"],
                             extra=extra)
    manifest = mf.read(out / "export")
    unsplit = (out / "export" / manifest["unsplit"]["file"]).read_bytes()
    tuned = Evaluator(unsplit, spec.n_exits, quantize_input(manifest, ds.val.x), ds.val.y)({})
    search_result = mp["search"]
    report.update({
        "bits": "mixed",
        "weight_bytes": sum(v for s in manifest["stages"] for k, v in s["weight_bytes"].items() if k != "bias"),
        "weight_bytes_by_width": report["weight_bytes"],
        "int8_weight_bytes": search_result["int8_weight_bytes"],
        "flash_budget_bytes": search_result["budget_bytes"],
        "bits_per_layer": mp["bits"],
        "search_validation_accuracy": {"all8": search_result["all8"]["accuracy"],
                                       "chosen_before_fine_tuning": search_result["chosen"]["accuracy"],
                                       "after_fine_tuning": tuned},
    })
    report["firmware_text_rodata_bytes"] = text_rodata_bytes(out / "firmware" / report["firmware_target"])
    if int8_report is not None:
        report.update({"all8_early_exit_accuracy": int8_report["int8_early_exit_accuracy"],
                       "all8_final_accuracy": int8_report["int8_final_accuracy"],
                       "all8_instructions_mean": int8_report["instructions_mean"],
                       "all8_instructions_all_stages": int8_report.get("instructions_all_stages"),
                       "all8_firmware_text_rodata_bytes": text_rodata_bytes(
                           out / "int8" / "firmware" / int8_report["firmware_target"])})
    pipeline.write_json(out / "report.json", report)
    pareto_plot(search_result, out / "bits_pareto.png", f"{spec.task}: accuracy vs weight bytes",
                extra=[("chosen, fine-tuned", report["weight_bytes"], tuned)])
    return report


def text_rodata_bytes(build_dir: Path) -> int | None:
    """Flash of the firmware build in build_dir: arm-none-eabi-size's `text` (.text and .rodata), or None."""
    import shutil
    import subprocess

    elves = sorted(Path(build_dir).glob("*.elf"))
    tool = shutil.which("arm-none-eabi-size")
    if not elves or tool is None:
        return None
    line = subprocess.run([tool, str(elves[0])], capture_output=True, text=True).stdout.splitlines()[-1]
    return int(line.split()[0])
