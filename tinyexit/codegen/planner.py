"""Static memory plan: every activation tensor gets an offset in one arena; tensors whose lifetimes do
not overlap share memory. Greedy by size (largest first), each at the lowest offset that fits."""

from __future__ import annotations

from dataclasses import dataclass

ALIGN = 8


@dataclass
class Buffer:
    size: int
    first: int  # step that writes it (-1: before the first step, the model input)
    last: int   # last step that reads it
    offset: int = -1

    def use(self, step: int) -> None:
        self.last = max(self.last, step)


def plan(buffers: list[Buffer]) -> int:
    """Assigns offsets; returns the arena size (the peak)."""
    placed: list[Buffer] = []
    for b in sorted(buffers, key=lambda b: (-b.size, b.first)):
        live = sorted((p for p in placed if p.first <= b.last and b.first <= p.last), key=lambda p: p.offset)
        offset = 0
        for p in live:
            if offset + b.size <= p.offset:
                break
            offset = max(offset, -(-(p.offset + p.size) // ALIGN) * ALIGN)
        b.offset = offset
        placed.append(b)
    return max((b.offset + b.size for b in placed), default=0)
