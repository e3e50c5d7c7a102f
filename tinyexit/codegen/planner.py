"""Static memory plan: every activation buffer gets an offset in one arena; buffers whose lifetimes do not
overlap share memory. Several greedy orders are tried (largest first, longest-lived first, earliest first,
...): each places a buffer at the lowest offset that fits beside the live ones already placed; the smallest
arena wins. In-place operators and reshapes reach the planner as one buffer (codegen.layout merges them)."""

from __future__ import annotations

from dataclasses import dataclass

ALIGN = 8


@dataclass(eq=False)
class Buffer:
    size: int
    first: int  # step that writes it (-1: before the first step, the model input)
    last: int   # last step that reads it
    offset: int = -1

    def use(self, step: int) -> None:
        self.last = max(self.last, step)


ORDERS = {
    "largest first": lambda b: (-b.size, b.first),
    "longest-lived first": lambda b: (-(b.last - b.first), -b.size, b.first),
    "largest area first": lambda b: (-b.size * (b.last - b.first + 1), b.first),
    "earliest first": lambda b: (b.first, -b.size),
    "latest-ending first": lambda b: (-b.last, -b.size),
}


def place(buffers: list[Buffer], key) -> list[int]:
    """Offsets for the buffers (in their order) with one greedy order."""
    placed: list[tuple[int, Buffer]] = []
    offsets = {}
    for b in sorted(buffers, key=key):
        live = sorted(((o, p) for o, p in placed if p.first <= b.last and b.first <= p.last), key=lambda op: op[0])
        offset = 0
        for o, p in live:
            if offset + b.size <= o:
                break
            offset = max(offset, -(-(o + p.size) // ALIGN) * ALIGN)
        offsets[id(b)] = offset
        placed.append((offset, b))
    return [offsets[id(b)] for b in buffers]


def plan(buffers: list[Buffer]) -> int:
    """Assigns offsets (each distinct Buffer once); returns the arena size (the peak)."""
    unique = list({id(b): b for b in buffers}.values())
    best, best_size = None, None
    for key in ORDERS.values():
        offsets = place(unique, key)
        size = max((o + b.size for o, b in zip(offsets, unique)), default=0)
        if best_size is None or size < best_size:
            best, best_size = offsets, size
    for b, o in zip(unique, best or []):
        b.offset = o
    return best_size or 0
