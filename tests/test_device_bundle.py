"""benchmarks/device_bundle.py without a GPU: what it would fetch for the GPU image (its dry run, no
network), and that the Ray it slims and strips still runs a Ray Data job with a join (checked on this
machine's own Ray and polars, slimmed and stripped the same way)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "benchmarks" / "device_bundle.py"


def _module():
    spec = importlib.util.spec_from_file_location("device_bundle", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_names_exactly_what_the_gpu_image_lacks():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--json"], capture_output=True, text=True, timeout=120
    )
    result = json.loads(done.stdout)
    packages = result["packages"]
    for needed in (
        "ray",
        "diffusers",
        "datasets",
        "webdataset",
        "ftfy",
        "beautifulsoup4",
        "torchao",
        "jsonschema",
        "polars",
    ):
        assert needed in packages, needed
    bundle = _module()
    assert not set(packages) & bundle.ON_DEVICE  # nothing the image already has
    assert "grpcio" not in packages and "opentelemetry-sdk" not in packages  # no dashboard stack
    from importlib.metadata import version

    assert packages["ray"] == version("ray") and packages["diffusers"] == version(
        "diffusers"
    )  # the versions CI runs
    assert result["limit_bytes"] == 64 * 2**20 and result["tree_bytes"] > 0 and result["estimate_bytes"] > 0
    assert done.returncode == (0 if result["fits"] else 1)


@pytest.mark.slow
def test_a_slimmed_and_stripped_ray_still_runs_a_ray_data_join(tmp_path):
    import polars
    import ray

    bundle = _module()
    site = tmp_path / "site"
    site.mkdir()
    for package in (ray, polars):
        shutil.copytree(Path(str(package.__file__)).parent, site / package.__name__, symlinks=True)
    runtime = Path(str(polars.__file__)).parent.parent
    for extra in runtime.glob("_polars_runtime*"):
        shutil.copytree(extra, site / extra.name, symlinks=True)
    assert bundle.slim(site) > 10 * 2**20  # the jars and RLlib at least
    assert not (site / "ray" / "jars").exists() and not (site / "ray" / "rllib").exists()
    bundle.strip_binaries(site)
    job = (
        "import ray, sys; assert ray.__file__.startswith(sys.argv[1]), ray.__file__\n"
        "ray.init(address='local', num_cpus=2, include_dashboard=False, log_to_driver=False)\n"
        "left = ray.data.from_items([{'k': i, 'a': i} for i in range(20)])\n"
        "right = ray.data.from_items([{'k': i, 'b': -i} for i in range(0, 20, 2)])\n"
        "rows = left.join(right, join_type='left_anti', num_partitions=2, on=('k',)).take_all()\n"
        "assert sorted(r['k'] for r in rows) == list(range(1, 20, 2)), rows\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", job, str(site)], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
