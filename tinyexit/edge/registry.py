"""The fleet registry: one retained JSON message per member at tinyexit/<fleet>/registry/<id>.

A member (device or edge worker) publishes its record retained and sets a last will that publishes an empty
retained message on the same topic, which deletes it: a member that vanishes without saying goodbye is
removed by the broker itself. `read` collects the retained records; `choose_peer` picks where to hand a cut.
"""

from __future__ import annotations

import threading
import time

from tinyexit.edge import protocol
from tinyexit.edge.protocol import Member

# relative throughput per MHz of each core (integer int8 CNN work; DSP/MVE cores do more per cycle).
# Coarse figures for ranking peers, not a cost model: M7 dual-issue ~1.6x an M4, M55 with MVE ~2.5x.
CORE_SPEED = {"cortex-m0+": 0.4, "cortex-m0": 0.4, "cortex-m3": 0.8, "cortex-m4": 1.0, "cortex-m33": 1.05,
              "cortex-m7": 1.6, "cortex-m55": 2.5, "xtensa-lx7": 1.0, "x86-64": 20.0}


def capabilities_of_board(board_name: str) -> dict:
    """core, clock_mhz, flash_kb, ram_kb of a boards/*.yaml board (an empty dict for an unknown one)."""
    from tinyexit import boards
    from tinyexit.errors import TinyexitError

    try:
        b = boards.load(board_name)
    except TinyexitError:
        return {}
    return {"core": b.core, "clock_mhz": b.clock_hz / 1e6, "flash_kb": b.flash_bytes // 1024,
            "ram_kb": b.ram_bytes // 1024}


def set_will(client, fleet: str, member_id: str) -> None:
    """Before connecting: the broker clears the record when this client is lost."""
    client.will_set(protocol.topic_registry(fleet, member_id), b"", qos=1, retain=True)


def publish(client, fleet: str, member: Member):
    return client.publish(protocol.topic_registry(fleet, member.id), member.touch().encode(), qos=1, retain=True)


def clear(client, fleet: str, member_id: str):
    """A clean goodbye (the will only fires on an unclean loss)."""
    return client.publish(protocol.topic_registry(fleet, member_id), b"", qos=1, retain=True)


def read(url: str, fleet: str, quiet: float = 0.3, timeout: float = 3.0) -> list[Member]:
    """Every retained record of the fleet: subscribe, collect until no record came for `quiet` seconds."""
    from tinyexit.edge.broker import connect_client, new_client

    members: dict[str, Member] = {}
    last = [time.monotonic()]
    subscribed = threading.Event()
    lock = threading.Lock()

    def on_message(client, userdata, msg):
        with lock:
            last[0] = time.monotonic()
            if not msg.payload:
                return
            try:
                m = Member.parse(msg.payload)
            except protocol.ProtocolError:
                return  # someone else's junk on our topic: not a member
            members[m.id] = m

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        last[0] = time.monotonic()
        subscribed.set()

    client = new_client()
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    connect_client(client, url, timeout=timeout)
    try:
        client.subscribe(protocol.topic_registry(fleet), qos=1)
        subscribed.wait(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() - last[0] < quiet and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        client.disconnect()
        client.loop_stop()
    return sorted(members.values(), key=lambda m: (m.role, m.id))


def capability_score(member: Member) -> float:
    """Relative compute: clock x per-MHz speed of the core (unknown core: an M4's)."""
    caps = member.capabilities
    return float(caps.get("clock_mhz", 0.0)) * CORE_SPEED.get(str(caps.get("core", "")).lower(), 1.0)


def choose_peer(members: list[Member], model_hash: str, exclude: str = "", role: str | None = None,
                min_ram_kb: float = 0.0, required_ops: set[str] | None = None,
                better_than: Member | None = None) -> Member | None:
    """The registered peer that runs `model_hash` with the most spare compute: capability x (1 - load), ties
    by lower load then id. Peers without enough RAM or lacking an operator are skipped; `better_than`: only
    peers more capable than this member (an M4 hands its cut to an M7, not to another M4)."""
    def fits(m: Member) -> bool:
        caps = m.capabilities
        if m.id == exclude or m.model_hash != model_hash or (role and m.role != role):
            return False
        if float(caps.get("ram_kb", float("inf"))) < min_ram_kb:
            return False
        if required_ops and caps.get("ops") is not None and not required_ops <= set(caps["ops"]):
            return False
        return better_than is None or capability_score(m) > capability_score(better_than)

    candidates = [m for m in members if fits(m)]
    if not candidates:
        return None
    return max(candidates, key=lambda m: (capability_score(m) * (1.0 - min(max(m.load, 0.0), 1.0)), -m.load,
                                          [-ord(c) for c in m.id]))


def format_table(members: list[Member], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [("id", "role", "board", "model", "core", "MHz", "flash kB", "RAM kB", "load", "last seen")]
    for m in members:
        c = m.capabilities
        rows.append((m.id, m.role, m.board or "-", m.model_hash[:12] or "-", str(c.get("core", "-")),
                     f"{c['clock_mhz']:g}" if "clock_mhz" in c else "-", str(c.get("flash_kb", "-")),
                     str(c.get("ram_kb", "-")), f"{m.load:.2f}", f"{max(0.0, now - m.last_seen):.1f} s ago"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)
