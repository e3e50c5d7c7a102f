"""Feature codecs on real cut tensors: ratio (raw bytes / encoded bytes) per codec per cut, entropy, the
codec `choose()` picks, accuracy after decode, and the firmware's cost on qemu-m4 (instructions per byte).

    python bench/codecs.py [--samples 300] [--exports DIR ...] [--no-qemu]

Cuts measured:
  * MLPerf Tiny's KWS reference model (DS-CNN), its nine post-ReLU activations (25 x 5 x 64) on kws01 inputs
    (LiteRT reference kernels, bit-exact with TFLite Micro, intermediates kept);
  * every staged export given (default: the shipped examples/har-tiny/export and the demo's HAR/KWS exports
    when present): stage 0's features on the validation split (codec choice, requantization shift) and the
    test split (ratios; accuracy of the final exit on decoded features vs on the exact ones).
Figures are instruction counts under QEMU -icount (not Cortex-M4 cycles).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tinyexit.edge import codec  # noqa: E402
from tinyexit.edge.codec import Kind, Params  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
DEMO = Path("/work/wt/demo/out")


def kws_cuts(samples: int):
    """(name, cuts (N, values), zero point) for each ReLU activation of the KWS reference model."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_codec import kws_post_relu_cuts

    return kws_post_relu_cuts(DATASETS, samples)


def export_cuts(export: Path, samples: int):
    """Stage 0's features on the val and test splits, and a function giving the final exit's accuracy on
    test features (decoded or not)."""
    from tinyexit.data import load
    from tinyexit.reference import StageInterpreter, quantize_input

    manifest = json.loads((export / "manifest.json").read_text())
    dataset = load(manifest["task"])
    outputs = manifest["stages"][0]["outputs"]
    feature = [o["role"] for o in outputs].index("features")
    stages = [StageInterpreter((export / s["file"]).read_bytes(), "litert-ref") for s in manifest["stages"]]
    final = next(e for e in manifest["exits"] if e["final"])

    val, test = dataset.val.subset(samples, seed=0), dataset.test.subset(samples, seed=0)  # random, not one subject

    def features(split):
        xq = quantize_input(manifest, split.x)
        return np.stack([stages[0](x[None])[feature].reshape(-1) for x in xq])

    def accuracy(cuts: np.ndarray) -> float:
        # run stages 1.. on the cuts (one cut: stage 0 -> 1), the final exit's argmax against the labels
        shape = manifest["stages"][1]["inputs"][0]["shape"]
        predictions = []
        for cut in cuts:
            x = cut.reshape(shape)
            for index in range(1, final["stage"] + 1):
                out = stages[index](x)
                if index == final["stage"]:
                    x = out[final["output"]]
                else:
                    x = out[[o["role"] for o in manifest["stages"][index]["outputs"]].index("features")]
            predictions.append(int(np.argmax(x.reshape(-1))))
        return float(np.mean(np.array(predictions) == test.y[:len(cuts)]))

    return manifest, features(val), features(test), outputs[feature]["zero_point"], accuracy


def decoded(p: Params, cuts: np.ndarray) -> np.ndarray:
    return np.stack([codec.decode(p, codec.encode(p, row), row.size)[0] for row in cuts])


# --- qemu-m4: instructions per byte of the firmware's encode/decode -------------------------------------

TIMING_MAIN = r"""
#include <cstdint>
#include "tinyexit/codec.h"
#include "tinyexit/platform.h"
#include "cut.h"
using namespace tx;
static uint8_t stream[kCutBytes + 16];
static int8_t back[kCutBytes];
static void put(int32_t v) {
  char text[12]; int i = 11; text[i] = ' ';
  const bool negative = v < 0; uint32_t u = negative ? -static_cast<uint32_t>(v) : static_cast<uint32_t>(v);
  do { text[--i] = static_cast<char>('0' + u % 10); u /= 10; } while (u);
  if (negative) text[--i] = '-';
  platform::write_bytes(reinterpret_cast<const uint8_t*>(text + i), 12 - i);
}
int main(int argc, char** argv) {
  platform::init(argc, argv);
  for (int kind = 0; kind < 4; ++kind) {
    codec::Params p{static_cast<codec::Kind>(kind), kZeroPoint, kShift[kind]};
    const uint32_t t0 = platform::cycles_aligned();
    const int32_t bytes = codec::encode(p, kCut, kCutBytes, stream, sizeof stream);
    const uint32_t encode_instructions = platform::cycles() - t0;
    const uint32_t t1 = platform::cycles_aligned();  // re-bases the counter: measure from here afresh
    const int32_t used = codec::decode(p, stream, bytes, back, kCutBytes);
    const uint32_t decode_instructions = platform::cycles() - t1;
    uint32_t hash = 2166136261u;  // FNV-1a of the stream, compared with Python's
    for (int32_t i = 0; i < bytes; ++i) hash = (hash ^ stream[i]) * 16777619u;
    int32_t same = kind < 2 ? 1 : -1;  // -1: lossy, not compared
    for (int32_t i = 0; i < kCutBytes && kind < 2; ++i) same &= back[i] == kCut[i];
    put(kind); put(bytes); put(used); put(same); put(static_cast<int32_t>(hash));
    put(static_cast<int32_t>(encode_instructions)); put(static_cast<int32_t>(decode_instructions));
    platform::write_bytes(reinterpret_cast<const uint8_t*>("\n"), 1);
  }
  platform::exit(0);
}
"""


def qemu_instructions(cut: np.ndarray, zero_point: int, shifts: dict[int, int]) -> list[dict] | None:
    """Encode and decode one cut on the emulated Cortex-M4; instruction counts per codec (the aligned
    start adds at most one SysTick period, 40 instructions, to each)."""
    from tinyexit import sim_targets
    from tinyexit.firmware_build import FIRMWARE, TARGETS

    qemu, compiler = shutil.which("qemu-system-arm"), shutil.which("arm-none-eabi-g++")
    if not qemu or not compiler:
        return None
    spec, target = TARGETS["qemu-m4"], sim_targets.load("qemu-m4")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        values = ", ".join(str(int(v)) for v in cut)
        (tmp / "cut.h").write_text(
            f"constexpr int32_t kCutBytes = {cut.size};\nconstexpr int8_t kZeroPoint = {zero_point};\n"
            f"constexpr int8_t kShift[4] = {{0, 0, {shifts[2]}, {shifts[3]}}};\n"
            f"alignas(4) static const int8_t kCut[kCutBytes] = {{{values}}};\n")
        (tmp / "main.cc").write_text(TIMING_MAIN)
        sources = [tmp / "main.cc", *sorted((FIRMWARE / "runtime" / "codec").glob("*.cc")),
                   *sorted((FIRMWARE / "ports" / spec["port"]).glob("*.cc"))]
        elf = tmp / "codec_timing.elf"
        subprocess.run([compiler, "-std=c++17", "-O2", "-Wall", "-Wextra", "-fno-exceptions", "-fno-rtti",
                        *spec["flags"], f"-I{FIRMWARE / 'include'}", f"-I{tmp}", *map(str, sources),
                        "-o", str(elf), *spec["link"]], check=True)
        out = tmp / "uart.txt"
        subprocess.run([qemu, "-M", target.machine, *target.qemu_options, "-serial", f"file:{out}",
                        "-kernel", str(elf)], check=True, timeout=120)
        rows = []
        for line in out.read_text().splitlines():
            kind, size, used, same, stream_hash, enc, dec = map(int, line.split())
            rows.append({"codec": Kind(kind).name, "bytes": size, "consumed": used, "fnv1a": stream_hash & 0xFFFFFFFF,
                         "exact": {1: "yes", 0: "NO", -1: "lossy"}[same],
                         "encode_instructions": enc, "decode_instructions": dec,
                         "encode_per_byte": enc / cut.size, "decode_per_byte": dec / cut.size})
        return rows


def fnv1a(data: bytes) -> int:
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


def table(rows: list[list], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join([lines[0], lines[1], *("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
                                            for r in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300, help="samples per split (default 300)")
    parser.add_argument("--exports", nargs="*", type=Path, help="staged exports (default: HAR example + demo)")
    parser.add_argument("--no-qemu", action="store_true", help="skip the qemu-m4 instruction counts")
    args = parser.parse_args()
    exports = args.exports if args.exports is not None else [
        e for e in [ROOT / "examples" / "har-tiny" / "export", DEMO / "har" / "export", DEMO / "kws" / "export"]
        if (e / "manifest.json").is_file()]
    from tqdm import tqdm

    header = ["cut", "values", "zero share", "entropy b/value", "lossless", "requant4", "requant2", "zlib-9",
              "zstd-19", "lz4", "chosen"]
    rows = []
    reference = {}
    try:
        import zstandard
    except ImportError:
        zstandard = None
    try:
        import lz4.frame as lz4
    except ImportError:
        lz4 = None
    import zlib

    def library_ratios(cuts: np.ndarray) -> list[str]:
        """Well-kept general-purpose compressors on the same bytes, one stream per sample (as sent)."""
        out = []
        for name, fn in [("zlib", lambda b: zlib.compress(b, 9)),
                         ("zstd", zstandard and (lambda b, c=zstandard.ZstdCompressor(level=19): c.compress(b))),
                         ("lz4", lz4 and (lambda b: lz4.compress(b, compression_level=12)))]:
            if fn is None:
                out.append("n/a")
                continue
            out.append(f"{cuts.shape[1] / np.mean([len(fn(row.tobytes())) for row in cuts]):.2f}")
        return out

    cuts_all = kws_cuts(args.samples)
    for name, cuts, zero_point in tqdm(cuts_all, desc="KWS reference model cuts"):
        report = codec.measure(cuts, zero_point)
        c = report.codecs
        rows.append([f"kws-ref {name.split('/')[1]}", report.values_per_sample, f"{report.zero_fraction:.3f}",
                     f"{report.entropy_bits:.2f}", f"{c['LOSSLESS'].ratio:.2f}", f"{c['REQUANT4'].ratio:.2f}",
                     f"{c['REQUANT2'].ratio:.2f}", *library_ratios(cuts), codec.choose(report).kind.name.lower()])
        reference[name] = (cuts, zero_point, report)
    accuracy_rows = []
    for export in tqdm(exports, desc="staged exports"):
        manifest, val, test, zero_point, accuracy = export_cuts(export, args.samples)
        chosen = codec.choose(codec.measure(val, zero_point))  # chosen and calibrated on validation
        report = codec.measure(test, zero_point)
        c = report.codecs
        label = f"{manifest['task']} {export.parent.name if export.name == 'export' else export.name} stage 0"
        rows.append([label, report.values_per_sample, f"{report.zero_fraction:.3f}", f"{report.entropy_bits:.2f}",
                     f"{c['LOSSLESS'].ratio:.2f}", f"{c['REQUANT4'].ratio:.2f}", f"{c['REQUANT2'].ratio:.2f}",
                     *library_ratios(test), chosen.kind.name.lower()])
        exact = accuracy(test)
        val_report = codec.measure(val, zero_point)
        row = [label, f"{exact:.4f}"]
        for kind in ("REQUANT4", "REQUANT2"):
            p = val_report.codecs[kind].params  # shift calibrated on the validation split
            row.append(f"{accuracy(decoded(p, test)):.4f} (shift {p.shift})")
        accuracy_rows.append(row)
    print(f"Ratio = raw bytes / encoded bytes, mean over {args.samples} samples per cut "
          "(kws01 inputs; random test-split samples of the exports)")
    print(table(rows, header))
    if accuracy_rows:
        print("\nFinal-exit accuracy on the test split, features exact (raw or lossless) vs requantized and decoded")
        print(table(accuracy_rows, ["cut", "exact", "requant4", "requant2"]))
    if not args.no_qemu:
        name, (cuts, zero_point, report) = list(reference.items())[-1]
        shifts = {2: report.codecs["REQUANT4"].params.shift, 3: report.codecs["REQUANT2"].params.shift}
        rows = qemu_instructions(cuts[0], zero_point, shifts)
        if rows is None:
            print("\nqemu-m4: qemu-system-arm or arm-none-eabi-g++ missing, skipped")
        else:
            print(f"\nqemu-m4 (instructions, not cycles), one {cuts.shape[1]}-byte cut ({name.split(';')[0]}, "
                  f"kws01 sample 0), firmware codecs at -O2")
            print(table([[r["codec"].lower(), r["bytes"], f"{cuts.shape[1] / r['bytes']:.2f}", r["exact"],
                          r["encode_instructions"], f"{r['encode_per_byte']:.2f}", r["decode_instructions"],
                          f"{r['decode_per_byte']:.2f}"] for r in rows],
                        ["codec", "bytes", "ratio", "exact", "encode instr", "per byte", "decode instr", "per byte"]))


if __name__ == "__main__":
    main()
