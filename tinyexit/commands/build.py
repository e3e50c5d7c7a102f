"""`tinyexit build`: generate C++ for a model and compile the firmware for a target."""

from pathlib import Path

HELP = "generate interpreter-free C++ for an export folder or a plain .tflite and build the firmware"


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="export folder (manifest.json + stages) or a .tflite file")
    from tinyexit import sim_targets

    p.add_argument("--target", default="host", choices=["host", *sim_targets.names()],
                   help="what to build for (default: host; emulated targets: sim/*.yaml)")
    p.add_argument("--out", metavar="DIR", help="build folder (default: out/build/<target>)")
    p.add_argument("--kernels", default="auto", choices=["auto", "portable", "dsp"],
                   help="kernel variant: auto = Cortex-M DSP kernels where the core has them (default), "
                        "portable = plain C++, dsp = DSP kernels (emulated in C++ on the host)")
    p.add_argument("--sanitize", action="store_true", help="host only: build with AddressSanitizer and UBSan")


def run(args) -> int:
    from tinyexit import atomic
    from tinyexit.commands import warn_if_uncalibrated
    from tinyexit.firmware_build import build, memory_summary

    out = Path(args.out or f"out/build/{args.target}")
    atomic.check_writable(out, "--out", folder=True)
    warn_if_uncalibrated(args.model)
    b = build(args.model, args.target, out, sanitize=args.sanitize, kernels=args.kernels)
    print(f"built {b.binary}")
    print(f"  generated model: {out / 'model.cc'} ({b.num_layers} layers, {b.macs:,} MACs)")
    print(f"  activation arena (static plan, peak): {b.arena_bytes:,} bytes; input {b.input_bytes:,} bytes")
    print(f"  {memory_summary(b.memory)} -> {out / 'build.json'}")
    return 0
