"""Human-readable tables of the figures in report.json."""

from __future__ import annotations


def demo_table(r: dict) -> str:
    rows = [
        ("task", r["task"]),
        ("test samples", f"{r['n_test']:,}"),
        ("float accuracy (final exit)", f"{r['float_accuracy']:.2%}"),
        ("int8 accuracy, final exit only", f"{r['int8_final_accuracy']:.2%}"),
        ("int8 accuracy with early exit", f"{r['int8_early_exit_accuracy']:.2%}"),
        ("early-exit rate", f"{r['early_exit_rate']:.1%}"),
        ("threshold (max probability)", f"{r['threshold']:.4f} (q15 {r['threshold_q15']})"),
        ("MACs, backbone without exits", f"{r['macs_no_exit']:,}"),
        ("MACs, mean with exits", f"{r['macs_mean']:,.0f}"),
        ("MAC ratio", f"{r['mac_ratio']:.3f}"),
        (f"qemu-m4 {r['instruction_unit']}, no exits", f"{r['instructions_no_exit']:,.0f}"),
        (f"qemu-m4 {r['instruction_unit']}, mean with exits", f"{r['instructions_mean']:,.0f}"),
        ("instruction ratio", f"{r['instructions_ratio']:.3f}"),
        ("firmware vs TFLite Micro", f"{r['firmware_mismatches_vs_tflm']} mismatches in {r['firmware_samples']:,} samples"),
        ("seconds", f"{r['seconds']:.0f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def tasks_table(reports: list[dict]) -> str:
    """One markdown table, a column per task's report.json (what the README's results table is)."""

    def is_number(v) -> bool:  # a hand-edited or older report may hold anything: those cells show "-"
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def pct(key):
        return lambda r: f"{r[key]:.2%}" if is_number(r.get(key)) else "-"

    def num(key, fmt):
        return lambda r: format(r[key], fmt) if is_number(r.get(key)) and (fmt != "d" or isinstance(r[key], int)) else "-"

    rows = [
        ("test samples", num("n_test", ",")),
        ("int8 accuracy, no exits (pretrained model as is)", pct("int8_pretrained_accuracy")),
        ("int8 accuracy, final exit only", pct("int8_final_accuracy")),
        ("int8 accuracy with early exit", pct("int8_early_exit_accuracy")),
        ("early-exit rate", pct("early_exit_rate")),
        ("MAC ratio (mean with exits / without)", num("mac_ratio", ".3f")),
        ("qemu-m4 instructions without exits", num("instructions_no_exit", ",.0f")),
        ("qemu-m4 instructions, mean with exits", num("instructions_mean", ",.0f")),
        ("**instruction ratio**", num("instructions_ratio", ".3f")),
        ("instructions per MAC, no-exit path", num("instructions_per_mac_no_exit", ".2f")),
        ("firmware samples run (qemu-m4)", num("firmware_samples", ",")),
        ("firmware mismatches with TFLite Micro", num("firmware_mismatches_vs_tflm", "d")),
    ]
    lines = ["| | " + " | ".join(r["task"].upper() for r in reports) + " |",
             "|---|" + "---|" * len(reports)]
    lines += [f"| {name} | " + " | ".join(cell(r) for r in reports) + " |" for name, cell in rows]
    return "\n".join(lines)
