"""The output dataset: layout and metadata (:mod:`.layout`), the settings guard (:mod:`.guard`), the
card (:mod:`.card`), prompt staging (:mod:`.staging`), the shard formats (:mod:`.formats`, one module
each) and the Ray-free writers (:mod:`.writers`)."""

from __future__ import annotations

from .layout import OutputDataset, open_output, store_location

__all__ = ["OutputDataset", "open_output", "store_location"]
