"""Builds the firmware for a target from generated model sources. One list of sources and flags."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tinyexit import sim_targets
from tinyexit.errors import TinyexitError
from tinyexit.paths import FIRMWARE_DIR as FIRMWARE
COMMON_FLAGS = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-fno-exceptions", "-fno-rtti"]
_BARE_METAL = ["-mthumb", "-ffunction-sections", "-fdata-sections", "-fno-threadsafe-statics"]
TARGETS = {
    "host": {"compiler": "g++", "port": "host", "flags": [], "link": []},
}
TARGETS.update(sim_targets.build_targets())  # the emulated targets: one sim/<name>.yaml each


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
    memory: dict = field(default_factory=dict)       # the memory report, also written to build.json


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
            "suffix": "" if target == "host" else ".elf", "upload": upload, "firmware_dir": str(FIRMWARE),
            "arena_bytes": generated.arena_bytes, "input_bytes": generated.input_bytes}
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
    objects = _compile_runtime(compiler, flags, [Path(s) for s in plan["sources"][:-1]], out_dir, target)
    model_object = out_dir / "obj" / "model.o"
    log = out_dir / "build.log"
    compile_model = [compiler, *flags, "-c", plan["sources"][-1], "-o", str(model_object)]
    link = [compiler, *flags, str(model_object), *map(str, objects), "-o", str(binary), *plan["link"]]
    transcript = []
    for step in (compile_model, link):
        proc = subprocess.run(step, capture_output=True, text=True, env=_c_locale())
        transcript.append(" ".join(step) + "\n" + proc.stderr)
        log.write_text("\n".join(transcript))
        if proc.returncode != 0:
            raise TinyexitError(f"firmware build failed for {target}: "
                                f"{failure_summary(proc.stderr, plan, model_object, log)}")
    memory = memory_report(binary, compiler, generated.arena_bytes, generated.layers, target, kernels)
    write_memory_report(out_dir / "build.json", memory)
    return Build(target, binary, generated.arena_bytes, generated.input_bytes, generated.num_layers, generated.macs,
                 generated.layers, generated.input_sizes, generated.outputs, memory)


STACK_NOTE = "stack_bytes: the target's measured high-water mark; null until `tinyexit sim` has run inferences"


def section_sizes(binary: Path, compiler: str) -> dict[str, int]:
    """Allocated section sizes of a linked binary by the toolchain's `size -A` (host: `size`)."""
    size_tool = shutil.which(compiler.replace("g++", "size")) if compiler.endswith("g++") else None
    size_tool = size_tool or shutil.which("size")
    if size_tool is None or not binary.is_file():
        return {}
    proc = subprocess.run([size_tool, "-A", str(binary)], capture_output=True, text=True, env=_c_locale())
    rows = [line.split() for line in proc.stdout.splitlines()]
    return {row[0]: int(row[1]) for row in rows if len(row) >= 3 and row[0].startswith(".") and row[1].isdigit()}


def memory_report(binary: Path, compiler: str, arena_bytes: int, layers: list[dict], target: str = "",
                  kernels: str = "auto", stack_bytes: int | None = None) -> dict:
    """What a build takes: flash (text + rodata + data), weights as stored and as plain int8, the static
    activation arena, RAM (data + bss + the stack: measured, else the reserved size)."""
    sections = section_sizes(binary, compiler)
    code = ("text", "rodata", "vectors", "init_array", "fini_array", "ARM.exidx", "ARM.extab", "eh_frame", "gcc_except")
    text = sum(n for name, n in sections.items() if name.lstrip(".").startswith(code) and not name.startswith(".eh_frame_hdr"))
    data = sum(n for name, n in sections.items() if name.startswith((".data", ".tdata")))
    bss = sum(n for name, n in sections.items() if name.startswith((".bss", ".tbss")))
    stack_reserved = sections.get(".stack", 0)
    report = {"target": target, "kernels": kernels, "binary": binary.name,
              "arena_bytes": int(arena_bytes),
              "stack_bytes": stack_bytes, "stack_reserved_bytes": stack_reserved,
              "flash_bytes": text + data, "text_bytes": text, "data_bytes": data, "bss_bytes": bss,
              "weight_flash_bytes": sum(int(layer.get("weight_bytes", 0)) for layer in layers),
              "int8_weight_bytes": sum(int(layer.get("int8_weight_bytes", layer.get("weight_bytes", 0)))
                                       for layer in layers)}
    return with_stack(report, stack_bytes)


def with_stack(report: dict, stack_bytes: int | None) -> dict:
    """The report with a stack figure (a measured high-water mark, or None: unknown) and RAM from it."""
    report = dict(report)
    report["stack_bytes"] = stack_bytes if stack_bytes else None
    stack = report["stack_bytes"] if report["stack_bytes"] else report.get("stack_reserved_bytes", 0)
    report["ram_bytes"] = report["data_bytes"] + report["bss_bytes"] + stack
    if report["stack_bytes"]:
        report.pop("note", None)
    else:
        report["note"] = STACK_NOTE + ("; ram_bytes counts the reserved stack" if report.get("stack_reserved_bytes")
                                       else "; the host's stack is not counted")
    return report


def write_memory_report(path: Path, report: dict) -> None:
    import json

    path.write_text(json.dumps(report, indent=2) + "\n")


def memory_summary(report: dict) -> str:
    """One line: arena, stack, RAM, flash, weights (as stored and as plain int8)."""
    if report.get("stack_bytes"):
        stack = f"stack {report['stack_bytes']:,} B"
    elif report.get("stack_reserved_bytes"):
        stack = f"stack not measured ({report['stack_reserved_bytes']:,} B reserved, counted in RAM; `tinyexit sim` measures it)"
    else:
        stack = "stack not measured"
    return (f"memory: arena {report['arena_bytes']:,} B, {stack}, RAM {report['ram_bytes']:,} B, "
            f"flash {report['flash_bytes']:,} B (weights {report['weight_flash_bytes']:,} B; "
            f"as int8 {report['int8_weight_bytes']:,} B)")


MODEL_DEFINES = ("-DTX_MAX_INPUT_BYTES=", "-DTX_MAX_OUTPUT_BYTES=", "-DTX_NUM_LAYERS=")


def _c_locale() -> dict:
    """The compiler's messages in plain ASCII quotes, whatever the user's locale (the error summary quotes them)."""
    return {**os.environ, "LC_ALL": "C"}


_OVERFLOW = re.compile(r"region [`'](\w+)' overflowed by (\d+) bytes")
_DIAGNOSTIC = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+)(?::\d+)?: (?:fatal )?error: (?P<message>.*)$")


def failure_summary(stderr: str, plan: dict | None = None, model_object: Path | None = None,
                    log: Path | str | None = None) -> str:
    """One sentence for a failed compile or link: which memory region overflowed and by how much, against the
    linker script's memory map and the board's YAML, else the first compiler or linker error with its file."""
    sentence, details = _failure(stderr, plan or {}, model_object)
    details += [f"log: {log}"] if log else []
    return sentence + (f" ({'; '.join(details)})" if details else "")


def _failure(stderr: str, plan: dict, model_object: Path | None) -> tuple[str, list[str]]:
    overflows = dict((m.group(1), int(m.group(2))) for m in _OVERFLOW.finditer(stderr))
    if overflows:
        parts = [_overflow(region, excess, plan, model_object) for region, excess in overflows.items()]
        details = [d for _, part_details in parts for d in part_details]
        return "the model needs " + " and ".join(p for p, _ in parts), list(dict.fromkeys(details))
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        match = _DIAGNOSTIC.match(line)
        if match:
            return f"{_short_path(match['file'])}:{match['line']}: error: {match['message']}", []
    for line in lines:  # the linker's own errors (undefined references, ...) and compiler errors without a place
        if ("error" in line or "undefined reference" in line) and not line.startswith("collect2:"):
            tool, _, rest = line.partition(": ")
            tool = os.path.basename(tool)
            message = rest if tool in ("ld", "ld.bfd", "cc1plus") or tool.endswith("-ld") else line
            return re.sub(r"(/[^\s:'`]+)", lambda m: _short_path(m.group(1)), message), []
    return (lines[0] if lines else "the compiler failed without a message"), []


def _short_path(path: str) -> str:
    """A firmware source as `firmware/...`, a generated one by its file name."""
    try:
        return str(Path(path).resolve().relative_to(FIRMWARE.parent))
    except ValueError:
        return Path(path).name


def memory_regions(linker_script: Path) -> dict[str, tuple[str, int]]:
    """The MEMORY block of a GNU ld script: region name -> (attributes, length in bytes)."""
    text = re.sub(r"/\*.*?\*/", "", Path(linker_script).read_text(), flags=re.S)
    block = re.search(r"MEMORY\s*\{(.*?)\}", text, re.S)
    regions = {}
    for name, attributes, length in re.findall(r"(\w+)\s*\((\w*)\)\s*:\s*ORIGIN\s*=\s*[^,]+,\s*LENGTH\s*=\s*([^\n]+)",
                                               block.group(1) if block else ""):
        try:
            regions[name] = (attributes, _ld_number(length))
        except ValueError:
            continue
    return regions


def _ld_number(expression: str) -> int:
    """ld's constant expressions as linker scripts write lengths: 4M, 512K, 0x1000, a - b."""
    total, sign = 0, 1
    for token in re.findall(r"0[xX][0-9a-fA-F]+|\d+[KkMm]?|[-+]|\S", expression.strip().rstrip(";")):
        if token in "+-":
            sign = -1 if token == "-" else 1
            continue
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", token):
            value = int(token, 16)
        elif re.fullmatch(r"\d+[KkMm]?", token):
            value = int(token.rstrip("KkMm")) * {"k": 1 << 10, "m": 1 << 20}.get(token[-1].lower(), 1)
        else:
            raise ValueError(f"not a constant: {expression}")
        total += sign * value
    return total


def _size_words(n: int) -> str:
    return f"{n >> 20} MB" if n and n % (1 << 20) == 0 else f"{n >> 10} kB" if n and n % 1024 == 0 else f"{n:,} bytes"


def _overflow(region: str, excess: int, plan: dict, model_object: Path | None):
    """("N bytes more RAM than the 4 MB region 'RAM' holds", [what the board has, what the model takes])"""
    scripts = [Path(flag[2:]) for flag in plan.get("link", []) if flag.startswith("-T")]
    attributes, length = memory_regions(scripts[0]).get(region, ("", 0)) if scripts and scripts[0].is_file() else ("", 0)
    is_ram = "w" in attributes.lower() or (not attributes and "RAM" in region.upper())
    kind = "RAM" if is_ram else "flash"
    sentence = f"{excess:,} bytes more {kind} than the {_size_words(length) + ' ' if length else ''}region '{region}' holds"
    details = []
    board = plan.get("board")
    if board:
        from tinyexit.boards import BOARDS_DIR, load

        total = load(board).ram_bytes if is_ram else load(board).flash_bytes
        has = f"{board} has {total:,} bytes of {kind} in {BOARDS_DIR.name}/{board}.yaml"
        details.append(has if total == length or not length else f"{has}, of which its port links {length:,} into '{region}'")
    if "arena_bytes" in plan and is_ram:
        details.append(f"arena {plan['arena_bytes']:,} bytes, input buffer {plan['input_bytes']:,} bytes")
    elif not is_ram:
        constants = _constant_bytes(model_object, plan.get("compiler", ""))
        if constants:
            details.append(f"the model's weights and constants {constants:,} bytes")
    return sentence, details


def _constant_bytes(model_object: Path | None, compiler: str) -> int:
    """Bytes of read-only data (weights, parameters) in the compiled model, by the toolchain's `size`."""
    size_tool = shutil.which(compiler.replace("g++", "size")) if compiler.endswith("g++") else None
    if model_object is None or not model_object.is_file() or size_tool is None:
        return 0
    proc = subprocess.run([size_tool, "-A", str(model_object)], capture_output=True, text=True)
    rows = [line.split() for line in proc.stdout.splitlines()]
    return sum(int(row[1]) for row in rows if len(row) >= 2 and row[0].startswith((".rodata", ".data")) and row[1].isdigit())


def _headers_digest() -> bytes:
    """Every firmware header at once: a change to any of them invalidates every cached object."""
    h = hashlib.sha256()
    for path in sorted([*(FIRMWARE / "include").rglob("*.h"), *(FIRMWARE / "runtime").rglob("*.h"),
                        *(FIRMWARE / "ports").rglob("*.h")]):
        h.update(str(path.relative_to(FIRMWARE)).encode() + b"\0" + path.read_bytes())
    return h.digest()


def _compile_runtime(compiler: str, flags: list[str], sources: list[Path], out_dir: Path,
                     target: str = "the runtime") -> list[Path]:
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
        proc = subprocess.run([compiler, *job_flags, "-c", str(source), "-o", str(tmp)], capture_output=True, text=True,
                              env=_c_locale())
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
        raise TinyexitError(f"firmware build failed for {target}: {failure_summary(chr(10).join(failures), log=log)}")
    return [obj for _, obj, _ in jobs]


def build_plan(model_path: str | Path, target: str, gen_dir: str | Path, kernels: str = "auto") -> dict:
    """What `build` runs, for other build systems (PlatformIO's builder, pio/platform-tinyexit): generates the
    model into gen_dir and returns the compiler, flags, sources and link flags, from the same lists."""
    return _plan(model_path, target, Path(gen_dir), kernels)[0]


def main(argv: list[str] | None = None) -> int:
    """`python -m tinyexit.firmware_build --print-build TARGET --model MODEL --gen-dir DIR`: the build plan
    as JSON on stdout (what pio/platform-tinyexit compiles). `--explain-failure LOG --plan PLAN.json`: the
    one-sentence summary of a failed compile or link whose compiler output is in LOG."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m tinyexit.firmware_build")
    p.add_argument("--print-build", metavar="TARGET")
    p.add_argument("--model")
    p.add_argument("--gen-dir")
    p.add_argument("--kernels", default="auto")
    p.add_argument("--explain-failure", metavar="LOG")
    p.add_argument("--plan", metavar="PLAN_JSON")
    args = p.parse_args(argv)
    if args.explain_failure:
        plan = json.loads(Path(args.plan).read_text()) if args.plan else {}
        print(failure_summary(Path(args.explain_failure).read_text(errors="replace"), plan, log=args.explain_failure))
        return 0
    if not (args.print_build and args.model and args.gen_dir):
        p.error("--print-build TARGET --model MODEL --gen-dir DIR, or --explain-failure LOG")
    try:
        plan = build_plan(args.model, args.print_build, args.gen_dir, args.kernels)
    except TinyexitError as err:
        print(f"tinyexit: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(plan))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
