"""Matrix products other than CONV_2D / FULLY_CONNECTED: TRANSPOSE_CONV, BATCH_MATMUL."""

from __future__ import annotations

OPS: dict = {}
