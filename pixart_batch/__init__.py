"""pixart_batch: sharded, reproducible synthetic image datasets with PixArt-α on Ray.

Importing the package is cheap (no torch, diffusers or ray): heavy modules load lazily.
"""

__version__ = "0.1.0"
