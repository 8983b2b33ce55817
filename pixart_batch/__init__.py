"""pixart_batch: sharded, reproducible synthetic image datasets with PixArt-α / PixArt-Σ on Ray.

Importing the package is cheap (no torch, diffusers or ray): heavy modules load lazily.
"""

import logging


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
    "transformers.utils.import_utils",  # "CLIPImageProcessor requires torchvision ... falling back" (same pixels)
)
"""Third-party loggers that warn on import about nothing a run did (quiet unless ``--verbose``)."""


def quiet_import_noise(quiet: bool = True) -> None:
    """Show only errors of :data:`IMPORT_NOISE_LOGGERS` (``quiet=False``: their own levels again)."""
    for name in IMPORT_NOISE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.NOTSET)


quiet_import_noise()
