"""GPU check: pixart_batch at the real PixArt-XL-2 sizes, random weights, one card.

The code is the package ``benchmarks/gpu_check/`` (see its ``__init__``); this script keeps the command
line ``python3 benchmarks/gpu_check.py [--small] [--sections ...] [--out DIR]``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the package beside this script

from gpu_check.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
