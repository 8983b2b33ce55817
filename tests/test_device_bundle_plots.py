"""The GPU device bundle leaves out the gallery's plotting library (matplotlib and what only it needs):
a project dependency that no GPU job imports (``pixart-batch gallery`` is the only command that does)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "device_bundle.py"


def test_the_bundle_leaves_out_matplotlib_and_its_own_dependencies():
    spec = importlib.util.spec_from_file_location("device_bundle_plots", SCRIPT)
    assert spec and spec.loader
    bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle)
    assert {"matplotlib", "contourpy", "kiwisolver", "fonttools", "cycler", "pyparsing"} <= bundle.LEFT_OUT
    assert "matplotlib" not in bundle.ROOTS
    command = [sys.executable, str(SCRIPT), "--dry-run", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    packages = json.loads(done.stdout)["packages"]
    assert not set(packages) & bundle.LEFT_OUT, sorted(set(packages) & bundle.LEFT_OUT)
    assert "ray" in packages and "datasets" in packages  # the bundle itself is still whole
