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
