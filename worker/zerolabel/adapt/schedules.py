"""DINO's schedules as functions of the step: learning rate, weight decay, teacher momentum and
temperature, and whether the head's last layer is still frozen.

Each value depends on the step and the config only, so a resumed run needs no schedule state.
The cosine follows DINO's ``cosine_scheduler``: a linear warm-up from ``start`` to ``base``
over the first ``warmup`` steps (both ends included), then ``final + (base - final) (1 +
cos(pi i / n)) / 2`` for step ``warmup + i`` of the remaining ``n``. Standard library only.
"""

from __future__ import annotations

import math

from zerolabel.adapt.config import AdaptConfig


def cosine(
    step: int, total: int, base: float, final: float, *, warmup: int = 0, start: float = 0.0
) -> float:
    """The value at ``step`` (0-based) of a ``total``-step cosine schedule with warm-up.

    Args:
        step: the step, 0 to ``total - 1`` (later steps keep the last value).
        total: steps of the schedule.
        base: the value at the end of the warm-up (the cosine's start).
        final: the value the cosine reaches at the last step.
        warmup: steps of the linear warm-up from ``start`` to ``base``.
        start: the warm-up's first value.
    """
    step = min(max(step, 0), total - 1)
    warmup = min(warmup, total)
    if step < warmup:
        if warmup == 1:
            return start
        return start + (base - start) * step / (warmup - 1)
    remaining = total - warmup
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * (step - warmup) / remaining))


def steps_of(fraction: float, total: int) -> int:
    """Steps in a share of the run (rounded; at least one when the share is not 0)."""
    if fraction <= 0:
        return 0
    return max(1, round(fraction * total))


def learning_rate(config: AdaptConfig, step: int) -> float:
    """Linear warm-up to the scaled peak, then cosine to ``min_lr``."""
    warmup = steps_of(config.warmup_fraction, config.steps)
    return cosine(step, config.steps, config.peak_lr, config.min_lr, warmup=warmup)


def weight_decay(config: AdaptConfig, step: int) -> float:
    """Cosine from ``weight_decay`` to ``weight_decay_end`` (it grows)."""
    return cosine(step, config.steps, config.weight_decay, config.weight_decay_end)


def teacher_momentum(config: AdaptConfig, step: int) -> float:
    """The EMA momentum of the teacher: cosine from ``momentum`` to 1."""
    return cosine(step, config.steps, config.momentum, 1.0)


def teacher_temperature(config: AdaptConfig, step: int) -> float:
    """Linear from ``warmup_teacher_temp`` to ``teacher_temp`` over the warm-up, then constant."""
    warmup = steps_of(config.teacher_temp_fraction, config.steps)
    if step >= warmup:
        return config.teacher_temp
    if warmup == 1:
        return config.warmup_teacher_temp
    share = step / (warmup - 1)
    return config.warmup_teacher_temp + (config.teacher_temp - config.warmup_teacher_temp) * share


def last_layer_frozen(config: AdaptConfig, step: int) -> bool:
    """Whether the head's last layer gets no update at ``step`` (DINO's first epoch)."""
    return step < steps_of(config.freeze_last_layer_fraction, config.steps)
