"""Run-wide settings and the results dict (written out after every section)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from gpu_check.configs import FULL, SMALL
from gpu_check.report import markdown


class Context:
    """Run-wide settings and the results dict (written out after every section)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.small = args.small
        self.spec = SMALL if args.small else FULL
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        half = self.cuda
        self.dit_dtype = (
            torch.float16 if half else torch.float32
        )  # parity, throughput (the pipeline's fp16 recipe)
        self.embedding_dtype = (
            torch.bfloat16 if half else torch.float32
        )  # the encoder's dtype in configs/one-gpu.yaml
        self.t5_dtype = torch.bfloat16 if half else torch.float32
        self.dit_step_dtype = torch.bfloat16 if half else torch.float32
        self.vae_dtype = torch.float16 if half else torch.float32
        self.out = Path(args.out).resolve()
        self.workdir = (
            Path(args.workdir).resolve()
            if args.workdir
            else Path(tempfile.mkdtemp(prefix="gpu_check-", dir="/tmp"))
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.command = os.environ.get("GPU_CHECK_COMMAND") or "python3 benchmarks/gpu_check.py " + " ".join(
            sys.argv[1:]
        )
        self.results: dict = {"meta": {}, "sections": {}}

    def checkpoint(self, label: str) -> Path:
        return self.workdir / f"pixart-xl2-{label}"

    @property
    def big(self) -> str:
        """The label of the large size (1024, or 256 with --small)."""
        return next(iter(self.spec.sizes))

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        (self.out / "gpu_check.md").write_text(markdown(self))
