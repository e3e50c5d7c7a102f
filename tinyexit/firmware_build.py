"""Builds the firmware for a target from generated model sources. One list of sources and flags."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
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


@dataclass
class Build:
    target: str
    binary: Path
    arena_bytes: int
    input_bytes: int
    num_layers: int
    macs: int
    layers: list


def runtime_sources(target: str) -> list[Path]:
    sources = sorted((FIRMWARE / "runtime").rglob("*.cc"))
    return sources + sorted((FIRMWARE / "ports" / TARGETS[target]["port"]).glob("*.cc"))


KERNELS = ("auto", "portable", "dsp")


def build(model_path: str | Path, target: str, out_dir: str | Path, sanitize: bool = False,
          kernels: str = "auto") -> Build:
    """Generate the model's C++ into out_dir and compile it with the runtime and the target's port.

    kernels: `auto` uses the Cortex-M DSP kernels (SMLAD/SXTB16) exactly on cores that have the DSP
    extension; `portable` forces the plain C++ kernels; `dsp` forces the DSP kernels (on the host, their
    C++ emulation of each instruction). Every choice gives the same bits."""
    from tinyexit.codegen import generate, load

    if target not in TARGETS:
        raise TinyexitError(f"unknown target '{target}' (known: {', '.join(TARGETS)})")
    if kernels not in KERNELS:
        raise TinyexitError(f"unknown kernel variant '{kernels}' (known: {', '.join(KERNELS)})")
    spec = TARGETS[target]
    compiler = shutil.which(spec["compiler"])
    if compiler is None:
        raise TinyexitError(f"{spec['compiler']} not found: run ./setup.sh")
    out_dir = Path(out_dir)
    generated = generate(load(model_path), out_dir)
    if sanitize and target != "host":
        raise TinyexitError("sanitizers are for the host build only")
    binary = out_dir / ("tinyexit_" + target + ("_asan" if sanitize else "") +
                        ("" if kernels == "auto" else "_" + kernels) + ("" if target == "host" else ".elf"))
    flags = COMMON_FLAGS + spec["flags"] + [f"-I{FIRMWARE / 'include'}",
                                            f"-DTX_MAX_INPUT_BYTES={generated.input_bytes}",
                                            f"-DTX_MAX_OUTPUT_BYTES={generated.max_output_bytes}",
                                            f"-DTX_NUM_LAYERS={generated.num_layers}"]
    if kernels != "auto":
        flags.append(f"-DTX_DSP_KERNELS={int(kernels == 'dsp')}")
    if sanitize:
        flags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-O1"]
    cmd = [compiler, *flags, *map(str, runtime_sources(target)), str(generated.source), "-o", str(binary), *spec["link"]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (out_dir / "build.log").write_text(" ".join(cmd) + "\n" + proc.stderr)
    if proc.returncode != 0:
        errors = [l for l in proc.stderr.splitlines() if "error" in l] or proc.stderr.splitlines() or ["?"]
        raise TinyexitError(f"firmware build failed for {target}: {errors[0]} (log: {out_dir / 'build.log'})")
    return Build(target, binary, generated.arena_bytes, generated.input_bytes, generated.num_layers, generated.macs,
                 generated.layers)
