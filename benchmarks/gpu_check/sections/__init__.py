"""The sections, in the order they run: one function per section, ``fn(ctx)``."""

from __future__ import annotations

from gpu_check.sections.components import dit_step_section, sigma_section, t5_section, vae_section
from gpu_check.sections.core import build_section, env_section, parity_section, throughput_section
from gpu_check.sections.e2e import e2e_section
from gpu_check.sections.lowvram import lowvram_section

SECTIONS = [
    ("env", env_section),
    ("build", build_section),
    ("parity", parity_section),
    ("throughput", throughput_section),
    ("t5", t5_section),
    ("dit_step", dit_step_section),
    ("vae", vae_section),
    ("sigma", sigma_section),
    ("lowvram", lowvram_section),
    ("e2e", e2e_section),
]
