"""Board descriptions (`boards/<name>.yaml`) and the energy proxy computed from them.

energy_uj = cycles / clock_hz * active_current_a * supply_v * 1e6: the datasheet's active power held for
the time the counted cycles take. On QEMU the counts are instructions, so the figure is a proxy twice over.

`links` (device -> edge, issue 17): per link the board has (uart, ble, wifi), its payload throughput in bytes/s
and the device's energy per byte sent in uJ, each with its source (a datasheet table, or "estimate: ...").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tinyexit.errors import TinyexitError
from tinyexit.paths import BOARDS_DIR

_REQUIRED = ("name", "core", "clock_hz", "flash_bytes", "ram_bytes", "active_current_a", "supply_v",
             "power_source", "pio_env")


LINK_KINDS = ("uart", "ble", "wifi")


@dataclass(frozen=True)
class Link:
    name: str                  # one of LINK_KINDS
    bytes_per_s: float         # payload throughput the device can sustain
    energy_uj_per_byte: float  # the device's energy per payload byte sent (radio or CPU awake while sending)
    source: str

    def seconds(self, n_bytes: float) -> float:
        return n_bytes / self.bytes_per_s

    def energy_uj(self, n_bytes: float) -> float:
        return n_bytes * self.energy_uj_per_byte


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
    links: tuple[Link, ...] = ()  # the first is the board's default link to the edge

    def link(self, name: str | None = None) -> Link:
        """The link `name`, or the board's default (first listed) one."""
        if not self.links:
            raise TinyexitError(f"board '{self.name}' lists no links (boards/{self.name}.yaml: links)")
        if name is None:
            return self.links[0]
        for link in self.links:
            if link.name == name:
                return link
        raise TinyexitError(f"board '{self.name}' has no {name} link (it has: "
                            f"{', '.join(x.name for x in self.links)})")

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
    data["links"] = _links(path, data.get("links"))
    return Board(**data)


def _links(path: Path, raw) -> tuple[Link, ...]:
    """`links: {uart: {bytes_per_s, energy_uj_per_byte, source}, ...}`, checked field by field."""
    import math

    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise TinyexitError(f"{path}: links must map link names ({', '.join(LINK_KINDS)}) to their figures")
    links = []
    for name, figures in raw.items():
        where = f"{path}: links.{name}"
        if name not in LINK_KINDS:
            raise TinyexitError(f"{path}: unknown link '{name}' (known: {', '.join(LINK_KINDS)})")
        if not isinstance(figures, dict):
            raise TinyexitError(f"{where} must be a mapping with bytes_per_s, energy_uj_per_byte and source")
        unknown = sorted(set(figures) - {"bytes_per_s", "energy_uj_per_byte", "source"})
        if unknown:
            raise TinyexitError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")
        for key in ("bytes_per_s", "energy_uj_per_byte"):
            value = figures.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise TinyexitError(f"{where}.{key} must be a positive number, not {value!r}")
        if not isinstance(figures.get("source"), str) or not figures["source"].strip():
            raise TinyexitError(f"{where}.source must say where the figures come from (a datasheet table, or "
                                f"\"estimate: ...\")")
        links.append(Link(name, float(figures["bytes_per_s"]), float(figures["energy_uj_per_byte"]),
                          " ".join(figures["source"].split())))
    return tuple(links)


def all_boards() -> list[Board]:
    return [load(n) for n in names()]


def for_target(target: str) -> Board | None:
    """The board a QEMU target stands in for (the one marked qemu_default if several), None if none."""
    candidates = [b for b in all_boards() if b.qemu == target]
    preferred = [b for b in candidates if b.qemu_default] or candidates
    return preferred[0] if preferred else None
