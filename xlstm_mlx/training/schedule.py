"""Learning-rate schedule: linear warm-up from 0, then cosine decay to min_lr at the last step."""

from __future__ import annotations

import math

import mlx.core as mx


def lr_at(step: int, lr: float, min_lr: float, warmup: int, total: int) -> float:
    """The learning rate used for optimizer step `step` (0-based)."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    span = max(total - warmup, 1)
    t = min(max(step - warmup, 0) / span, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * t))


def warmup_cosine(lr: float, min_lr: float, warmup: int, total: int):
    """The same schedule as an MLX schedule (a function of the optimizer's step counter, an array)."""
    span = max(total - warmup, 1)

    def schedule(step):
        step = step.astype(mx.float32) if isinstance(step, mx.array) else mx.array(step, mx.float32)
        warm = lr * (step + 1) / max(warmup, 1)
        t = mx.clip((step - warmup) / span, 0.0, 1.0)
        cos = min_lr + 0.5 * (lr - min_lr) * (1.0 + mx.cos(math.pi * t))
        return mx.where(step < warmup, warm, cos)

    return schedule
