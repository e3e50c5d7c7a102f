"""Static memory plan: every activation buffer gets an offset in one arena; buffers whose lifetimes do not
overlap share memory. Several greedy orders are tried (largest first, longest-lived first, earliest first,
...): each places a buffer at the lowest offset that fits beside the live ones already placed; the smallest
arena wins. In-place operators and reshapes reach the planner as one buffer (codegen.layout merges them),
whose `parts` say which of its bytes are live when: an in-place output smaller than its input frees the rest
of the input's bytes after its step, and a larger one takes its own bytes only from its step on."""

from __future__ import annotations

from dataclasses import dataclass, field

ALIGN = 8


@dataclass(eq=False)
class Buffer:
    size: int
    first: int  # step that writes it (-1: before the first step, the model input)
    last: int   # last step that reads it
    offset: int = -1
    # [first, last, rel, size]: bytes [rel, rel + size) of the buffer live from step first to last; empty: all of
    # it over [first, last]
    parts: list[list[int]] = field(default_factory=list)

    def use(self, step: int) -> None:
        self.last = max(self.last, step)

    def segments(self) -> list[list[int]]:
        return self.parts or [[self.first, self.last, 0, self.size]]


ORDERS = {
    "largest first": lambda b: (-b.size, b.first),
    "longest-lived first": lambda b: (-(b.last - b.first), -b.size, b.first),
    "largest area first": lambda b: (-b.size * (b.last - b.first + 1), b.first),
    "earliest first": lambda b: (b.first, -b.size),
    "latest-ending first": lambda b: (-b.last, -b.size),
}


def align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def place(buffers: list[Buffer], key) -> list[int]:
    """Offsets for the buffers (in their order) with one greedy order: each at the lowest aligned offset where
    none of its parts overlaps a part of a placed buffer live at the same steps."""
    placed: list[tuple[int, Buffer]] = []
    offsets = {}
    for b in sorted(buffers, key=key):
        mine = b.segments()
        forbidden = []  # offsets x with lo < x < hi collide
        for o, p in placed:
            if not (p.first <= b.last and b.first <= p.last):
                continue
            for f1, l1, r1, s1 in mine:
                for f2, l2, r2, s2 in p.segments():
                    if f1 <= l2 and f2 <= l1:
                        forbidden.append((o + r2 - r1 - s1, o + r2 + s2 - r1))
        offset = 0
        for x in sorted({0, *(align(hi) for _, hi in forbidden if hi > 0)}):
            if all(x <= lo or x >= hi for lo, hi in forbidden):
                offset = x
                break
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
