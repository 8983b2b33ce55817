"""Ray job entrypoint:
``ray job submit --working-dir . -- python jobs/generate.py --config ... --prompts ... --output ...``.

Runs unchanged locally (``python jobs/generate.py ...`` starts a local Ray) and on a cluster
(``RAY_ADDRESS`` set, or launched by ``ray job submit``). Same arguments as ``pixart-batch generate``.
"""

import os
import sys

# `ray job submit --working-dir .` runs this file from the working dir; make the package importable
# without installing it (Ray also puts the working dir on the workers' path).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pixart_batch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
