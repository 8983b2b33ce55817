"""GPU check: pixart_batch at the real PixArt-XL-2 sizes, random weights, one card.

Builds random (seeded, non-degenerate) PixArt-XL-2 components at the real sizes directly on
the GPU, saves 1024 and 512 checkpoints in the diffusers layout under a scratch folder, then:

  env         GPU, versions, date
  build       the 1024 / 512 checkpoints (transformer + VAE + scheduler, fp16 safetensors)
  parity      plain diffusers ``PixArtAlphaPipeline`` vs pixart_batch's Denoiser + Decoder stages,
              4 rows per size (one non-square bucket), varied prompt lengths, CFG 4.5, 20 steps;
              plus batch invariance of the stages (batch 1 vs batch 4)
  throughput  1024², 20 steps, CFG, fp16, 16 images after 2 warm-up images:
              (a) a plain diffusers loop fed precomputed embeddings (batch 8, output "pil")
              (b) the Denoiser + Decoder stages (batch 8)
  t5          T5-XXL encoder, bf16, 64 prompts padded to 120 vs 32 tokens
  dit_step    one DiT step with CFG (both branches), bf16 eager, per image
  vae         VAE decode at 1024², fp16, per image
  sigma       PixArt-Σ-XL-2-1024 (random): its own checkpoint (no micro-conditions, SDXL-style VAE
              config), plain diffusers ``PixArtSigmaPipeline`` vs the stages, 4 rows incl. a
              non-square bucket, prompt lengths up to 300 tokens, max_sequence_length 300
  lowvram     the low-VRAM recipe's pieces, peak memory per phase: T5-XXL bf16 vs torchao
              weight-only int8 (memory, deviation), what is left on the GPU once the encoder is
              deleted, VAE decode at 1024² / 2048² untiled vs tiled, batch 4 with and without slicing
  e2e         ``python -m pixart_batch generate`` + ``verify`` on the 1024 checkpoint (needs ray,
              datasets and polars; skipped with a note where they are not installed)

Each section is isolated: a failure prints its traceback and the next section runs. Results are
rewritten after every section to ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` (a section ready
to paste into benchmarks/RESULTS.md), so a timeout still leaves the numbers measured so far.

    bash benchmarks/gpu_check.sh                                  # on the GPU machine
    python benchmarks/gpu_check.py --small --out /tmp/gco         # CPU smoke test, tiny sizes

Layout: ``common`` (rows, timing, memory), ``configs`` (XL / --small configurations), ``context``,
``builders`` (random checkpoints; every stage spec through ``pixart_batch.spec.RunSpec``),
``reference`` (plain diffusers), ``adapter`` (every call into pixart_batch), ``sections/`` (one
function per section), ``report`` (Markdown), ``cli`` (arguments). ``benchmarks/gpu_check.py`` runs
``cli.main``.
"""

from __future__ import annotations

from gpu_check.builders import with_text_encoder
from gpu_check.context import Context
from gpu_check.sections import SECTIONS
from gpu_check.sections.core import build_section

__all__ = ["SECTIONS", "Context", "build_section", "with_text_encoder"]
