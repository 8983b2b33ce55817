"""Caption cleaning: exactly diffusers' PixArt cleaning, by calling diffusers."""

from __future__ import annotations

import importlib.util
from typing import ClassVar

import numpy as np

from .. import schema as S
from ..errors import UserError
from ..spec import CleanSpec
from .columns import Columns, columns


def require_cleaning_dependencies() -> None:
    """diffusers silently turns cleaning off without ftfy/bs4; a batch run must refuse instead."""
    missing = [
        name
        for name, module in (("ftfy", "ftfy"), ("beautifulsoup4", "bs4"))
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise UserError(
            f"caption cleaning needs {' and '.join(missing)} (pip install {' '.join(missing)}); "
            "or set model.clean_caption: false to encode prompts only lowercased and stripped"
        )


class CaptionCleaner:
    """Adds ``caption`` and ``negative_caption``: the text diffusers feeds T5 for ``prompt`` and
    ``negative_prompt`` (``_text_preprocessing``, which runs ``_clean_caption`` twice; without
    cleaning the text is lowercased and stripped, as in diffusers)."""

    reads: ClassVar[Columns] = columns(S.PROMPT, S.NEGATIVE_PROMPT)
    writes: ClassVar[Columns] = columns(S.CAPTION, S.NEGATIVE_CAPTION)
    drops: ClassVar[tuple[str, ...]] = ()
    keeps: ClassVar[bool] = True

    def __init__(self, spec: CleanSpec) -> None:
        if spec.clean_caption:
            require_cleaning_dependencies()
        import diffusers

        # The cleaning methods use no pipeline state: an instance without models is enough.
        self._pipeline = object.__new__(getattr(diffusers, spec.pipeline_class))
        self._clean_caption = spec.clean_caption

    def clean(self, texts: list[str]) -> list[str]:
        return self._pipeline._text_preprocessing(list(texts), clean_caption=self._clean_caption)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch[S.CAPTION] = np.array(self.clean(batch[S.PROMPT].tolist()), dtype=object)
        negatives = batch[S.NEGATIVE_PROMPT].tolist()
        unique = list(dict.fromkeys(negatives))
        cleaned = dict(zip(unique, self.clean(unique), strict=True))
        batch[S.NEGATIVE_CAPTION] = np.array([cleaned[n] for n in negatives], dtype=object)
        return batch
