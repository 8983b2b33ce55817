"""Ray job entrypoint for the embedding store alone. Same arguments as ``pixart-batch encode``."""

import sys

from pixart_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["encode", *sys.argv[1:]]))
