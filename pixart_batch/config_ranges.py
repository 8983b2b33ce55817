"""The range of every numeric config field, checked when a config is built.

Each range is declared on its field (``setting(..., range=at_least(1))``, :mod:`.config_fields`);
:data:`RANGES` is the table derived from the fields, keyed like :data:`pixart_batch.spec.ROLES`
(``stages.*.x`` for a field of every stage). A number outside its range is refused in one line,
``ray.no_progress_timeout_s: -1 is out of range (must be a finite number > 0)``. A float must also be
finite (YAML's ``.inf`` / ``.nan`` are numbers too); ``None`` where a field allows it is not a
number and is not checked; a list (``concurrency``, ``timesteps``) is checked element by element.
``tests/test_config.py`` fails for a numeric field without a range, and checks that the README's
config reference lists these ranges.
"""

from __future__ import annotations

from .config_fields import SEED, Range, above, at_least, check_ranges, numeric_fields
from .config_tables import RANGES, range_of, reference

__all__ = [
    "RANGES",
    "SEED",
    "Range",
    "above",
    "at_least",
    "check_ranges",
    "numeric_fields",
    "range_of",
    "reference",
]
