"""``python tests/jsonl_cli.py ARGS``: pixart-batch's CLI (``pixart_batch.cli.main``) with the test-only
JSONL format (:mod:`jsonl_format`) registered, for a subprocess the contract test kills."""

from __future__ import annotations

import sys

from jsonl_format import JsonlFormat  # run as a script: tests/ is sys.path[0]

from pixart_batch.cli import main
from pixart_batch.output.formats import register_format

if __name__ == "__main__":
    register_format(JsonlFormat.name, JsonlFormat)
    sys.exit(main(sys.argv[1:]))
