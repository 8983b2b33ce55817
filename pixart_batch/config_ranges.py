"""The range of every numeric config field, checked when a config is built.

One table (:data:`RANGES`), keyed like :data:`pixart_batch.spec.ROLES` (``stages.*.x`` for a field
of every stage): a number outside its range is refused in one line,
``ray.no_progress_timeout_s: -1 is out of range (must be a finite number > 0)``. A float must also be
finite (YAML's ``.inf`` / ``.nan`` are numbers too); ``None`` where a field allows it is not a
number and is not checked; a list (``concurrency``, ``timesteps``) is checked element by element.
``tests/test_config.py`` fails for a numeric field the table does not name, and checks that the
README's config reference lists these ranges.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (either end may be open: excluded, or absent: unbounded)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """``low`` itself is out of range (``> 0`` rather than ``>= 0``)."""
    high_open: bool = False
    """``high`` itself is out of range (``< 1000`` rather than ``<= 1000``)."""
    high_text: str | None = None
    """How ``high`` is written in messages (``2**63``)."""

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.high_open and value == self.high))

    def describe(self, number: str = "") -> str:
        """``>= 1``, ``> 0``, ``in 1..100``, ``in (0, 1]``, ``in [0, 2**63)``; ``number`` (``a finite number``) first."""
        prefix = f"{number} " if number else ""
        high = self.high_text or _shown(self.high)
        if self.high is None:
            return f"{prefix}{'>' if self.low_open else '>='} {_shown(self.low)}"
        if not (self.low_open or self.high_open) and isinstance(self.low, int) and isinstance(self.high, int):
            return f"{prefix}in {self.low}..{high}"
        return f"{prefix}in {'(' if self.low_open else '['}{_shown(self.low)}, {high}{')' if self.high_open else ']'}"


def at_least(low: float) -> Range:
    return Range(low)


def above(low: float) -> Range:
    return Range(low, low_open=True)


SEED = Range(0, 2**63, high_open=True, high_text="2**63")

RANGES: dict[str, Range] = {
    "model.tiny_seed": SEED,
    "model.max_sequence_length": at_least(1),
    "generation.seed": SEED,
    "generation.images_per_prompt": Range(1, 99_999),  # image keys carry a 5-digit index
    "generation.num_inference_steps": at_least(
        1
    ),  # at most the scheduler's training steps: checked with the checkpoint
    "generation.guidance_scale": at_least(0.0),  # <= 1: no classifier-free guidance
    "generation.width": at_least(8),  # at most the model's largest size: checked with the checkpoint
    "generation.height": at_least(8),
    "generation.timesteps": Range(0, 1000, high_open=True),
    "stages.*.batch_size": at_least(1),
    "stages.*.num_gpus": at_least(0.0),
    "stages.*.num_cpus": at_least(0.0),
    "stages.*.concurrency": at_least(1),
    "stages.denoise.step_cache_threshold": above(0.0),
    "stages.denoise.step_cache_interval": at_least(1),
    "output.image_quality": Range(1, 100),
    "output.rows_per_shard": at_least(1),
    "output.row_group_size": at_least(1),
    "output.store_rows_per_part": at_least(1),
    "failures.max_consecutive": at_least(1),
    "failures.max_rate": Range(0.0, 1.0, low_open=True),
    "failures.rate_after": at_least(1),
    "ray.num_cpus": at_least(1),
    "ray.no_progress_timeout_s": above(0.0),  # Ray Data refuses 0; there is no "off"
    "ray.local_max_images": at_least(0),  # 0: auto never runs in-process
    "ray.task_num_cpus": above(0.0),  # a task asking no CPU is not bounded by the cluster's CPUs
    "console.progress_interval_s": above(0.0),
    "estimate.usd_per_gpu_hour": above(0.0),
}
"""Each numeric config field (dotted name; ``stages.*.x``: that field of every stage) → its range."""


def range_of(name: str) -> Range | None:
    """The range of dotted field ``name`` (``stages.denoise.batch_size`` falls back to ``stages.*.batch_size``)."""
    if name in RANGES:
        return RANGES[name]
    parts = name.split(".")
    return RANGES.get(f"stages.*.{parts[2]}") if len(parts) == 3 and parts[0] == "stages" else None


def numeric_fields(cls: type, prefix: str = "") -> dict[str, bool]:
    """Dotted name → whether it is a float, of every int / float leaf field (lists of ints, and
    optional numbers, included) of a nested config dataclass."""
    found: dict[str, bool] = {}
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        name, hint = f"{prefix}{item.name}", hints[item.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            found.update(numeric_fields(hint, name + "."))
            continue
        options = set(typing.get_args(hint)) or {hint}
        options |= {
            arg for option in options if typing.get_origin(option) is list for arg in typing.get_args(option)
        }
        if options & {int, float}:
            found[name] = float in options
    return found


def check_ranges(config: Any, prefix: str = "") -> None:
    """Raise a one-line :class:`ConfigError` for the first number of ``config`` (a nested config
    dataclass instance) outside its range; a numeric field without a range is a programming error."""
    for item in dataclasses.fields(config):
        name, value = f"{prefix}{item.name}", getattr(config, item.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, name + ".")
            continue
        numbers = [v for v in (value if isinstance(value, list) else [value]) if _is_number(v)]
        if not numbers:
            continue
        allowed = range_of(name)
        if allowed is None:
            raise TypeError(f"config field {name} has no range in pixart_batch.config_ranges.RANGES")
        for number in numbers:
            if not allowed.contains(number):
                each = "each must be" if isinstance(value, list) else "must be"
                kind = "a finite number" if isinstance(number, float) else ""
                raise ConfigError(
                    f"{name}: {_shown(value)} is out of range ({each} {allowed.describe(kind)})"
                )


def reference() -> list[str]:
    """``name: range`` for every entry of :data:`RANGES`, as the README's config reference lists them."""
    return [f"{name}: {allowed.describe()}" for name, allowed in RANGES.items()]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)
