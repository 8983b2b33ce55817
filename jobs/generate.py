"""Ray job entrypoint: ``ray job submit --working-dir . -- python jobs/generate.py --config ... --prompts ... --output ...``.

Runs unchanged locally (``python jobs/generate.py ...`` starts a local Ray) and on a cluster
(``RAY_ADDRESS`` set, or launched by ``ray job submit``). Same arguments as ``pixart-batch generate``.
"""

import sys

from pixart_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
