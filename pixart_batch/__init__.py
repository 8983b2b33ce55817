"""pixart_batch: sharded, reproducible synthetic image datasets with PixArt-α / PixArt-Σ on Ray.

Importing the package is cheap (no torch, diffusers or ray): heavy modules load lazily.

The Python API (:mod:`pixart_batch.api`), one function per command::

    import pixart_batch

    report = pixart_batch.generate("prompts.txt", "out", config="configs/tiny.yaml")

``generate``, ``encode``, ``plan``, ``status``, ``verify``, ``export``, ``score`` and ``gallery`` are
loaded on first use. Errors a user can act on are :class:`UserError` (alias :class:`PixartBatchError`).
"""

import logging
import sys
import types
from typing import Any

from .errors import PixartBatchError, UserError

API_FUNCTIONS = ("generate", "encode", "plan", "status", "verify", "export", "score", "gallery")
"""The commands' functions, re-exported from :mod:`pixart_batch.api` on first use."""
CALLABLE_MODULES = ("export", "gallery")
"""Commands whose name is also a submodule's (``pixart_batch.export``, ...): the submodule stays what it is
and is made callable, calling the API function of its name (``pixart_batch.export(...)`` is
``pixart_batch.api.export(...)``, whichever was imported first)."""

__all__ = ["PixartBatchError", "UserError", "__version__", *API_FUNCTIONS]


class _CallableModule(types.ModuleType):
    """A submodule that is also a command's name: calling it calls :mod:`pixart_batch.api`'s function."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from . import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """The package: a submodule named as a command is made callable when the import system binds it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in CALLABLE_MODULES and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


def __getattr__(name: str) -> Any:
    if name in CALLABLE_MODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")  # bound (and made callable) by the import
    if name in API_FUNCTIONS:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


sys.modules[__name__].__class__ = _Package


def _version() -> str:
    """The installed distribution's version (pyproject.toml is the one place it is written)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pixart_batch")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"


__version__ = _version()

# torchao (the optional int8 T5 path) is imported by diffusers whenever it is installed, and that
# import logs warnings that are not errors of a run: one per prebuilt CUDA kernel it cannot load
# on this machine, torch's deprecation notes on its enums, and diffusers' note about torchao tensor
# classes it looks for by their old names. Only real errors of these loggers are shown, unless
# ``--verbose`` (:func:`pixart_batch.cli.configure_logging`) lets them speak again.
IMPORT_NOISE_LOGGERS = (
    "torchao",
    "torch.utils._pytree",
    "diffusers.quantizers.torchao.torchao_quantizer",
    # "CLIPImageProcessor requires torchvision ... falling back" (the same pixels either way)
    "transformers.utils.import_utils",
)
"""Third-party loggers that warn on import about nothing a run did (quiet unless ``--verbose``)."""


def quiet_import_noise(quiet: bool = True) -> None:
    """Show only errors of :data:`IMPORT_NOISE_LOGGERS` (``quiet=False``: their own levels again)."""
    for name in IMPORT_NOISE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.NOTSET)


quiet_import_noise()
