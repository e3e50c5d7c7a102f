"""Builds the firmware for a target from generated model sources. One list of sources and flags."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tinyexit.errors import TinyexitError
from tinyexit.paths import PROJECT_ROOT

FIRMWARE = PROJECT_ROOT / "firmware"
COMMON_FLAGS = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-fno-exceptions", "-fno-rtti"]
_MPS2_LINK = [f"-T{FIRMWARE / 'ports' / 'qemu_mps2' / 'mps2.ld'}", "-nostartfiles", "--specs=nano.specs",
              "--specs=nosys.specs", "-Wl,--gc-sections"]
_BARE_METAL = ["-mthumb", "-ffunction-sections", "-fdata-sections", "-fno-threadsafe-statics"]
TARGETS = {
    "host": {"compiler": "g++", "port": "host", "flags": [], "link": []},
    "qemu-m4": {"compiler": "arm-none-eabi-g++", "port": "qemu_mps2", "machine": "mps2-an386",
                "flags": ["-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", *_BARE_METAL,
                          "-DTX_UART_BASE=0x40004000", '-DTX_PORT_NAME="qemu-mps2-an386"', "-DTX_SYSCLK_HZ=25000000"],
                "link": _MPS2_LINK},
    "qemu-m7": {"compiler": "arm-none-eabi-g++", "port": "qemu_mps2", "machine": "mps2-an500",
                "flags": ["-mcpu=cortex-m7", "-mfpu=fpv5-d16", "-mfloat-abi=hard", *_BARE_METAL,
                          "-DTX_UART_BASE=0x40004000", '-DTX_PORT_NAME="qemu-mps2-an500"', "-DTX_SYSCLK_HZ=25000000"],
                "link": _MPS2_LINK},
    "qemu-m55": {"compiler": "arm-none-eabi-g++", "port": "qemu_mps2", "machine": "mps3-an547",
                 "flags": ["-mcpu=cortex-m55", "-mfloat-abi=hard", *_BARE_METAL,
                           "-DTX_UART_BASE=0x59303000", '-DTX_PORT_NAME="qemu-mps3-an547"', "-DTX_SYSCLK_HZ=32000000"],
                 "link": [f"-T{FIRMWARE / 'ports' / 'qemu_mps3' / 'mps3.ld'}", *_MPS2_LINK[1:]]},
}


def _board_target(board: str, port: str, cpu_flags: list[str], linker_script: str | None,
                  compiler: str = "arm-none-eabi-g++") -> dict:
    """A real board: its port, core flags and linker script; clock and name come from boards/<board>.yaml."""
    from tinyexit.boards import load

    spec = load(board)
    flags = [*cpu_flags, f"-DTX_CLOCK_HZ={spec.clock_hz}", "-DTX_BAUD=115200", f'-DTX_PORT_NAME="{board}"']
    link = ["-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections"]
    if linker_script:
        link = [f"-T{FIRMWARE / 'ports' / port / linker_script}", f"-L{FIRMWARE / 'ports' / 'cortex_m'}", *link]
    return {"compiler": compiler, "port": port, "board": board, "flags": flags, "link": link}


# Boards (PlatformIO envs of the same names). The ESP32-S3 needs Espressif's Xtensa GCC, which is not
# packaged for Debian: that target is described here but cannot be built on this machine.
TARGETS.update({
    "nucleo-l4r5zi": _board_target("nucleo-l4r5zi", "stm32l4", ["-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16",
                                   "-mfloat-abi=hard", *_BARE_METAL], "stm32l4r5.ld"),
    "nucleo-h7a3zi-q": _board_target("nucleo-h7a3zi-q", "stm32h7", ["-mcpu=cortex-m7", "-mfpu=fpv5-d16",
                                     "-mfloat-abi=hard", *_BARE_METAL], "stm32h7a3.ld"),
    "nano33ble": _board_target("nano33ble", "nrf52840", ["-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16",
                               "-mfloat-abi=hard", *_BARE_METAL], "nrf52840_arduino.ld"),
    "pico": _board_target("pico", "rp2040", ["-mcpu=cortex-m0plus", "-mfloat-abi=soft", *_BARE_METAL], "rp2040.ld"),
    "esp32s3": {**_board_target("esp32s3", "esp32s3", ["-mlongcalls", "-ffunction-sections", "-fdata-sections",
                                "-fno-threadsafe-statics"], None, compiler="xtensa-esp32s3-elf-g++"),
                "link": [f"-T{FIRMWARE / 'ports' / 'esp32s3' / 'esp32s3.ld'}", "-nostartfiles", "-Wl,--gc-sections"]},
})
BOARD_TARGETS = [t for t, spec in TARGETS.items() if "board" in spec]


@dataclass
class Build:
    target: str
    binary: Path
    arena_bytes: int
    input_bytes: int
    num_layers: int
    macs: int
    layers: list
    input_sizes: list = field(default_factory=list)  # bytes of each model input
    outputs: list = field(default_factory=list)      # the last stage's outputs (codegen.describe_outputs)


def runtime_sources(target: str) -> list[Path]:
    sources = sorted((FIRMWARE / "runtime").rglob("*.cc"))
    return sources + sorted((FIRMWARE / "ports" / TARGETS[target]["port"]).glob("*.cc"))


KERNELS = ("auto", "portable", "dsp")


def _plan(model_path: str | Path, target: str, gen_dir: Path, kernels: str):
    """The one place a build is assembled: generated model, compiler, flags, sources, link flags."""
    from tinyexit.codegen import generate, load

    if target not in TARGETS:
        raise TinyexitError(f"unknown target '{target}' (known: {', '.join(TARGETS)})")
    if kernels not in KERNELS:
        raise TinyexitError(f"unknown kernel variant '{kernels}' (known: {', '.join(KERNELS)})")
    spec = TARGETS[target]
    generated = generate(load(model_path), Path(gen_dir))
    flags = COMMON_FLAGS + spec["flags"] + [f"-I{FIRMWARE / 'include'}",
                                            f"-DTX_MAX_INPUT_BYTES={generated.input_bytes}",
                                            f"-DTX_MAX_OUTPUT_BYTES={generated.max_output_bytes}",
                                            f"-DTX_NUM_LAYERS={generated.num_layers}"]
    if kernels != "auto":
        flags.append(f"-DTX_DSP_KERNELS={int(kernels == 'dsp')}")
    upload = []
    if "board" in spec:
        from tinyexit.boards import load as load_board

        upload = [list(command) for command in load_board(spec["board"]).upload]
    plan = {"target": target, "board": spec.get("board"), "compiler": spec["compiler"], "flags": flags,
            "sources": [str(s) for s in runtime_sources(target)] + [str(generated.source)], "link": spec["link"],
            "suffix": "" if target == "host" else ".elf", "upload": upload}
    return plan, generated


def build(model_path: str | Path, target: str, out_dir: str | Path, sanitize: bool = False,
          kernels: str = "auto") -> Build:
    """Generate the model's C++ into out_dir and compile it with the runtime and the target's port.

    kernels: `auto` uses the Cortex-M DSP kernels (SMLAD/SXTB16) exactly on cores that have the DSP
    extension; `portable` forces the plain C++ kernels; `dsp` forces the DSP kernels (on the host, their
    C++ emulation of each instruction). Every choice gives the same bits."""
    if sanitize and target != "host":
        raise TinyexitError("sanitizers are for the host build only")
    if target in TARGETS and shutil.which(TARGETS[target]["compiler"]) is None:
        raise TinyexitError(f"{TARGETS[target]['compiler']} not found: run ./setup.sh")
    out_dir = Path(out_dir)
    plan, generated = _plan(model_path, target, out_dir, kernels)
    binary = out_dir / ("tinyexit_" + target + ("_asan" if sanitize else "") +
                        ("" if kernels == "auto" else "_" + kernels) + plan["suffix"])
    flags = plan["flags"]
    if sanitize:
        flags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-O1"]
    compiler = shutil.which(plan["compiler"])
    objects = _compile_runtime(compiler, flags, [Path(s) for s in plan["sources"][:-1]], out_dir)
    cmd = [compiler, *flags, plan["sources"][-1], *map(str, objects), "-o", str(binary), *plan["link"]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (out_dir / "build.log").write_text(" ".join(cmd) + "\n" + proc.stderr)
    if proc.returncode != 0:
        _fail(target, proc.stderr, out_dir / "build.log")
    return Build(target, binary, generated.arena_bytes, generated.input_bytes, generated.num_layers, generated.macs,
                 generated.layers, generated.input_sizes, generated.outputs)


MODEL_DEFINES = ("-DTX_MAX_INPUT_BYTES=", "-DTX_MAX_OUTPUT_BYTES=", "-DTX_NUM_LAYERS=")


def _fail(target: str, stderr: str, log: Path):
    errors = [l for l in stderr.splitlines() if "error" in l] or stderr.splitlines() or ["?"]
    raise TinyexitError(f"firmware build failed for {target}: {errors[0]} (log: {log})")


def _headers_digest() -> bytes:
    """Every firmware header at once: a change to any of them invalidates every cached object."""
    h = hashlib.sha256()
    for path in sorted([*(FIRMWARE / "include").rglob("*.h"), *(FIRMWARE / "runtime").rglob("*.h"),
                        *(FIRMWARE / "ports").rglob("*.h")]):
        h.update(str(path.relative_to(FIRMWARE)).encode() + b"\0" + path.read_bytes())
    return h.digest()


def _compile_runtime(compiler: str, flags: list[str], sources: list[Path], out_dir: Path) -> list[Path]:
    """Object files of the runtime and port sources. Sources that do not read the model's defines (all but
    the protocol's buffers) are compiled once per compiler, flags and content and kept in the cache
    (`$TINYEXIT_CACHE/objects`): a test suite building hundreds of one-layer models compiles the kernels once."""
    from concurrent.futures import ThreadPoolExecutor

    from tinyexit.paths import cache_dir

    shared_flags = [f for f in flags if not f.startswith(MODEL_DEFINES)]
    base = hashlib.sha256(("\0".join([compiler, *shared_flags])).encode() + _headers_digest())
    cache = cache_dir() / "objects"
    cache.mkdir(parents=True, exist_ok=True)
    jobs = []
    for source in sources:
        text = source.read_bytes()
        if any(d[2:-1].encode() in text for d in MODEL_DEFINES):
            jobs.append((source, out_dir / "obj" / (source.stem + ".o"), flags))
        else:
            key = base.copy()
            key.update(str(source.relative_to(FIRMWARE)).encode() + b"\0" + text)
            jobs.append((source, cache / (key.hexdigest()[:24] + ".o"), shared_flags))
    (out_dir / "obj").mkdir(parents=True, exist_ok=True)

    def compile_one(job):
        source, obj, job_flags = job
        if obj.is_file() and obj.parent == cache:
            return None
        tmp = obj.with_name(f"{obj.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        proc = subprocess.run([compiler, *job_flags, "-c", str(source), "-o", str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            return f"{compiler} {' '.join(job_flags)} -c {source}\n{proc.stderr}"
        tmp.replace(obj)  # atomic: parallel builds may race for the same object
        return None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        failures = [f for f in pool.map(compile_one, jobs) if f]
    if failures:
        log = out_dir / "build.log"
        log.write_text("\n".join(failures))
        _fail("the runtime", "\n".join(failures), log)
    return [obj for _, obj, _ in jobs]


def build_plan(model_path: str | Path, target: str, gen_dir: str | Path, kernels: str = "auto") -> dict:
    """What `build` runs, for other build systems (PlatformIO's builder, pio/platform-tinyexit): generates the
    model into gen_dir and returns the compiler, flags, sources and link flags, from the same lists."""
    return _plan(model_path, target, Path(gen_dir), kernels)[0]


def main(argv: list[str] | None = None) -> int:
    """`python -m tinyexit.firmware_build --print-build TARGET --model MODEL --gen-dir DIR`: the build plan
    as JSON on stdout (what pio/platform-tinyexit compiles)."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m tinyexit.firmware_build")
    p.add_argument("--print-build", metavar="TARGET", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--gen-dir", required=True)
    p.add_argument("--kernels", default="auto")
    args = p.parse_args(argv)
    try:
        plan = build_plan(args.model, args.print_build, args.gen_dir, args.kernels)
    except TinyexitError as err:
        print(f"tinyexit: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(plan))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
