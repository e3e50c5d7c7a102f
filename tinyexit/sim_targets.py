"""Emulated targets (`sim/<name>.yaml`): QEMU machine, core, clock, memory map, UART, the SysTick-to-instruction
calibration, the QEMU options, compiler flags and linker script, and the board each stands in for.
firmware_build.TARGETS and harness.firmware() read them from here; adding an emulated target is adding a file."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from tinyexit.errors import TinyexitError
from tinyexit.paths import FIRMWARE_DIR, SIM_DIR

_REQUIRED = ("name", "machine", "core", "sysclk_hz", "instructions_per_tick", "memory", "uart_base", "port",
             "port_name", "compiler", "cpu_flags", "linker_script", "qemu_options")
# every bare-metal build: Thumb, dead-code removal, no guard variables for local statics
_BARE_METAL = ["-mthumb", "-ffunction-sections", "-fdata-sections", "-fno-threadsafe-statics"]
_LINK = ["-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections"]


@dataclass(frozen=True)
class SimTarget:
    name: str
    machine: str
    core: str
    sysclk_hz: int
    instructions_per_tick: float
    memory: dict
    uart_base: int
    port: str
    port_name: str
    compiler: str
    cpu_flags: tuple[str, ...]
    linker_script: str
    qemu_options: tuple[str, ...]
    description: str = ""
    stands_in_for: str | None = None

    def build_spec(self) -> dict:
        """This target as a firmware_build.TARGETS entry."""
        flags = [*self.cpu_flags, *_BARE_METAL, f"-DTX_UART_BASE=0x{self.uart_base:08x}",
                 f'-DTX_PORT_NAME="{self.port_name}"', f"-DTX_SYSCLK_HZ={self.sysclk_hz}"]
        return {"compiler": self.compiler, "port": self.port, "machine": self.machine, "flags": flags,
                "link": [f"-T{FIRMWARE_DIR / self.linker_script}", *_LINK]}

    def qemu_command(self, qemu: str, binary, serial_port: int) -> list[str]:
        """QEMU's command line: the machine and options from the file, the UART on a TCP server socket."""
        return [qemu, "-M", self.machine, *self.qemu_options,
                "-chardev", f"socket,id=s0,host=127.0.0.1,port={serial_port},server=on,wait=on,nodelay=on",
                "-serial", "chardev:s0", "-kernel", str(binary)]


def names() -> list[str]:
    return sorted(p.stem for p in SIM_DIR.glob("*.yaml"))


@lru_cache(maxsize=None)
def load(name: str) -> SimTarget:
    path = SIM_DIR / f"{name}.yaml"
    if not path.is_file():
        raise TinyexitError(f"unknown emulated target '{name}' (known: {', '.join(names())})")
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise TinyexitError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TinyexitError(f"{path}: expected a mapping of target fields")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise TinyexitError(f"{path}: missing {', '.join(missing)}")
    unknown = sorted(set(data) - set(SimTarget.__dataclass_fields__))
    if unknown:
        raise TinyexitError(f"{path}: unknown field(s) {', '.join(unknown)}")
    if data["name"] != name:
        raise TinyexitError(f"{path}: name '{data['name']}' does not match the file name")
    # -icount shift=0 runs one instruction per virtual ns, so SysTick at sysclk_hz ticks every 1e9/sysclk_hz
    if abs(1e9 / data["sysclk_hz"] - float(data["instructions_per_tick"])) > 1e-9:
        raise TinyexitError(f"{path}: instructions_per_tick {data['instructions_per_tick']} is not "
                            f"1e9 / sysclk_hz = {1e9 / data['sysclk_hz']:g}")
    data["cpu_flags"] = tuple(map(str, data["cpu_flags"]))
    data["qemu_options"] = tuple(map(str, data["qemu_options"]))
    return SimTarget(**data)


def build_targets() -> dict[str, dict]:
    """Every emulated target as firmware_build.TARGETS entries."""
    return {name: load(name).build_spec() for name in names()}
