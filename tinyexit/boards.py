"""Board descriptions (`boards/<name>.yaml`) and the energy proxy computed from them.

energy_uj = cycles / clock_hz * active_current_a * supply_v * 1e6: the datasheet's active power held for
the time the counted cycles take. On QEMU the counts are instructions, so the figure is a proxy twice over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tinyexit.errors import TinyexitError
from tinyexit.paths import BOARDS_DIR

_REQUIRED = ("name", "core", "clock_hz", "flash_bytes", "ram_bytes", "active_current_a", "supply_v",
             "power_source", "pio_env")


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    core: str
    clock_hz: int
    flash_bytes: int
    ram_bytes: int
    active_current_a: float
    supply_v: float
    power_source: str
    pio_env: str
    qemu: str | None = None
    qemu_default: bool = False
    serial: str = ""
    upload: tuple[tuple[str, ...], ...] = ()  # commands run in order; {elf}, {bin}, {port} filled in
    power_note: str = ""

    @property
    def active_power_w(self) -> float:
        return self.active_current_a * self.supply_v

    def energy_uj(self, cycles: float) -> float:
        return cycles / self.clock_hz * self.active_power_w * 1e6


def names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.yaml"))


def load(name: str) -> Board:
    path = BOARDS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise TinyexitError(f"unknown board '{name}' (known: {', '.join(names())})")
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise TinyexitError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TinyexitError(f"{path}: expected a mapping of board fields")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise TinyexitError(f"{path}: missing {', '.join(missing)}")
    if data["name"] != name:
        raise TinyexitError(f"{path}: name '{data['name']}' does not match the file name")
    fields = set(Board.__dataclass_fields__)
    unknown = sorted(set(data) - fields)
    if unknown:
        raise TinyexitError(f"{path}: unknown field(s) {', '.join(unknown)}")
    data.setdefault("description", name)
    upload = data.get("upload") or []
    data["upload"] = tuple(tuple(map(str, c)) for c in (upload if upload and isinstance(upload[0], list) else [upload]) if c)
    return Board(**data)


def all_boards() -> list[Board]:
    return [load(n) for n in names()]


def for_target(target: str) -> Board | None:
    """The board a QEMU target stands in for (the one marked qemu_default if several), None if none."""
    candidates = [b for b in all_boards() if b.qemu == target]
    preferred = [b for b in candidates if b.qemu_default] or candidates
    return preferred[0] if preferred else None
