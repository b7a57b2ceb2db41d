"""Schedules: the reference's exponential learning-rate function and the SH degree ramp."""

from __future__ import annotations

import math

__all__ = ["expon_lr", "ExponentialLR", "sh_degree_at", "SH_DEGREE_INTERVAL"]

SH_DEGREE_INTERVAL = 1000  # one more SH band every this many iterations


def expon_lr(step: int, lr_init: float, lr_final: float, max_steps: int,
             delay_steps: int = 0, delay_mult: float = 1.0) -> float:
    """The reference's ``get_expon_lr_func`` evaluated at ``step``.

    ``lr(t) = delay(t) * exp((1 - u) ln lr_init + u ln lr_final)`` with ``u = clip(t / max_steps,
    0, 1)``, and ``delay(t) = mult + (1 - mult) sin(pi/2 clip(t / delay_steps, 0, 1))`` when
    ``delay_steps > 0``, else 1. A negative step, or both rates zero, gives 0.
    """
    if step < 0 or (lr_init == 0.0 and lr_final == 0.0):
        return 0.0
    if delay_steps > 0:
        ramp = min(max(step / delay_steps, 0.0), 1.0)
        delay = delay_mult + (1.0 - delay_mult) * math.sin(0.5 * math.pi * ramp)
    else:
        delay = 1.0
    u = min(max(step / max_steps, 0.0), 1.0)
    return delay * math.exp(math.log(lr_init) * (1.0 - u) + math.log(lr_final) * u)


class ExponentialLR:
    """A callable ``step -> learning rate`` (see :func:`expon_lr`)."""

    def __init__(self, lr_init: float, lr_final: float, max_steps: int,
                 delay_steps: int = 0, delay_mult: float = 1.0):
        self.lr_init, self.lr_final, self.max_steps = lr_init, lr_final, max_steps
        self.delay_steps, self.delay_mult = delay_steps, delay_mult

    def __call__(self, step: int) -> float:
        return expon_lr(step, self.lr_init, self.lr_final, self.max_steps, self.delay_steps,
                        self.delay_mult)


def sh_degree_at(iteration: int, max_degree: int) -> int:
    """Active SH degree during 1-based ``iteration``: the reference raises it by one at the start
    of every iteration that is a multiple of 1000 (degree 1 from 1000, 2 from 2000, ...)."""
    return min(max_degree, max(iteration, 0) // SH_DEGREE_INTERVAL)
