#!/usr/bin/env bash
# GPU check of pixart_batch at the real PixArt-XL-2 sizes (random weights): parity with plain
# diffusers, throughput, component timings. See benchmarks/gpu_check/ (run by benchmarks/gpu_check.py). Run from anywhere:
#
#   bash benchmarks/gpu_check.sh            # writes $OUT (default ./gpu_check_out): gpu_check.{json,md,log},
#                                           # throughput-xl-{512,1024}/ (benchmarks/throughput.py)
#   bash benchmarks/gpu_check.sh --small    # extra arguments go to gpu_check.py
#
# The GPU machine has no network: packages it lacks travel as .bundle/site.tar.xz (benchmarks/device_bundle.sh:
# Ray, diffusers, datasets and the rest, carry [".bundle"]), unpacked to /tmp/site; or, without the bundle, as
# wheels in .whl/ (git-ignored) installed to /tmp/site; should one of them not install, the others still are.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TRANSFORMERS_OFFLINE=1
export GPU_CHECK_COMMAND="bash benchmarks/gpu_check.sh${*:+ $*}"

if [ -f .bundle/site.tar.xz ]; then  # benchmarks/device_bundle.sh: every missing package, Ray included
  mkdir -p /tmp/site && tar -xJf .bundle/site.tar.xz -C /tmp/site && echo "gpu_check.sh: installed .bundle/site.tar.xz to /tmp/site"
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
elif compgen -G ".whl/*.whl" > /dev/null; then
  install=(python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site)
  if ! "${install[@]}" .whl/*.whl; then
    echo "gpu_check.sh: installing the wheels together failed; installing them one by one"
    for wheel in .whl/*.whl; do
      "${install[@]}" "$wheel" || echo "gpu_check.sh: $wheel did not install; going on without it"
    done
  fi
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

if command -v nvidia-smi > /dev/null; then nvidia-smi; else echo "gpu_check.sh: no nvidia-smi"; fi

# Under 9 minutes in all: gpu_check.py (about 200 s on an H200 before the e2e section, which runs the real
# CLI through Ray twice: a run, and a SIGKILL-and-resume), the two throughput presets, the fast modes.
timeout "${GPU_CHECK_TIMEOUT:-330}" python3 benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "gpu_check.sh: gpu_check.py hit its time limit; $OUT holds the sections finished before it"

# benchmarks/throughput.py's xl presets: the plain diffusers loop (a) and, where ray is installed,
# pixart-batch generate (b)-(d); without ray it says "(b)-(d) skipped". Results in
# $OUT/throughput-<preset>/throughput.{md,json} (not appended to RESULTS.md on the machine).
# --small (CPU smoke test): gpu_check's small sizes, 4 prompts, no time pressure.
preset_args=(--prompts 16) preset_timeout="${PRESET_TIMEOUT:-60}"
case " $* " in *" --small "*) preset_args=(--small --prompts 4) preset_timeout=900 ;; esac
for preset in xl-512 xl-1024; do
  timeout "$preset_timeout" python3 benchmarks/throughput.py --preset "$preset" "${preset_args[@]}" --no-append \
    --out "$OUT/throughput-$preset" 2>&1 | tee "$OUT/throughput-$preset.log"
  preset_status=${PIPESTATUS[0]}
  [ "$preset_status" = 124 ] && echo "gpu_check.sh: throughput $preset hit the ${preset_timeout} s limit"
  [ "$preset_status" != 0 ] && [ "$status" = 0 ] && status=$preset_status
done
# The DiT's fast modes (step caches, fp8 where the card has it, torch.compile): speed and PSNR against exact
# mode, same seeds (benchmarks/fast_modes.py, a random "small" checkpoint; CUDA only, about a minute).
if [ "${FAST_MODES:-1}" = 1 ] && python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  timeout "${FAST_MODES_TIMEOUT:-90}" python3 benchmarks/fast_modes.py --device cuda --compile --no-append 2>&1 | tee "$OUT/fast_modes.log"
  [ "${PIPESTATUS[0]}" = 124 ] && echo "gpu_check.sh: fast_modes hit its time limit"
fi
echo "gpu_check.sh: exit status $status"
exit "$status"
