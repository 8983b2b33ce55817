#!/usr/bin/env bash
# The packages the lent GPU machine lacks, slimmed and packed as .bundle/site.tar.xz (git-ignored), checked
# to fit a device call with the working tree (64 MiB). See benchmarks/device_bundle.py.
#
#   bash benchmarks/device_bundle.sh --dry-run   # what it would fetch and a size estimate (no network)
#   bash benchmarks/device_bundle.sh             # build it; exit 1, loudly, when it does not fit
#
# Then: run(command="bash benchmarks/gpu_check.sh", carry=[".bundle"]).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 benchmarks/device_bundle.py "$@"
