"""The packages the lent GPU machine lacks, as one archive a device call can carry (64 MiB with the tree).

The GPU image has torch, transformers, pyarrow, pandas, safetensors, sentencepiece, huggingface_hub,
aiohttp, msgpack, protobuf, pyyaml, click, filelock (:data:`ON_DEVICE`); it lacks Ray, diffusers, datasets
and the rest. This script finds exactly what is missing — the project's dependencies and the test extra's
webdataset and torchao, with everything they need in turn that the image lacks, less the gallery's
plotting library (:data:`LEFT_OUT`) — at the versions this environment runs (what CI installs), downloads
their cp312 manylinux wheels, installs them into a staging folder (``pip --target``, no dependencies
resolved there), slims Ray by what a Python-only Ray Data job never loads (:data:`RAY_SLIM`: the Java
jars, RLlib, Serve, the LLM library, the dashboard's source maps), and packs the folder as
``.bundle/site.tar.xz``. It fails loudly when that archive and the working tree together exceed the limit.

    python benchmarks/device_bundle.py --dry-run   # what it would fetch, and a size estimate (no network)
    python benchmarks/device_bundle.py             # build .bundle/site.tar.xz (git-ignored)

On the GPU machine (``carry: [".bundle"]``)::

    mkdir -p /tmp/site && tar -xJf .bundle/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site

``benchmarks/gpu_check.sh`` does that itself when the archive is there.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / ".bundle" / "site.tar.xz"
WHEELS = ROOT / ".bundle-wheels"
"""Downloaded wheels, kept for the next build (git-ignored, never carried)."""
LIMIT_BYTES = 64 * 1024 * 1024
ON_DEVICE = {
    "torch",
    "transformers",
    "pyarrow",
    "pandas",
    "numpy",
    "safetensors",
    "sentencepiece",
    "huggingface-hub",
    "aiohttp",
    "msgpack",
    "protobuf",
    "pyyaml",
    "click",
    "filelock",
    "tokenizers",
    "pillow",
    "requests",
    "packaging",
    "tqdm",
    "regex",
    "fsspec",
    "typing-extensions",
    "jinja2",
    "markupsafe",
    "sympy",
    "mpmath",
    "networkx",
    "psutil",
    "setuptools",
    "idna",
    "certifi",
    "charset-normalizer",
    "urllib3",
    "six",
    "python-dateutil",
    "pytz",
    "tzdata",
    "attrs",
    "frozenlist",
    "multidict",
    "yarl",
    "aiosignal",
    "propcache",
    "aiohappyeyeballs",
    "hf-xet",
}
"""Distributions the GPU image already has (the issue's list and what those bring with them). ``nvidia-*``
and ``triton`` (torch's CUDA runtime) are there too."""
LEFT_OUT = {"matplotlib", "contourpy", "kiwisolver", "fonttools", "cycler", "pyparsing"}
"""The gallery's plotting library and what it brings: a dependency of the project, but only ``pixart-batch
gallery`` imports it (never generate or a Ray worker), so the GPU machine does without (53 MiB installed,
about 8.5 MiB of archive)."""
ROOTS = [
    "ray",
    "diffusers",
    "datasets",
    "webdataset",
    "ftfy",
    "beautifulsoup4",
    "torchao",
    "accelerate",
    "polars",
    "jsonschema",
]
"""What the project runs on the GPU that the image lacks: the dependencies of pyproject.toml, the test
extra's webdataset and torchao (the fp8 and int8 sections), and Ray's jsonschema."""
SKIPPED_EXTRAS = {"ray": {"data"}}
"""The extras whose requirements are followed: Ray Data's, not ``default``'s (the dashboard and its
gRPC/OpenTelemetry stack, which a ``ray.init(address="local")`` job runs without)."""
RAY_SLIM = ["ray/jars", "ray/rllib", "ray/serve", "ray/llm", "ray/dashboard/client/build/static/js/*.map"]
"""What a Python-only Ray Data job never loads (checked by tests/test_device_bundle.py on this
machine's own Ray)."""
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
COMPRESSION = 0.16
"""Archive bytes per installed byte (less the slimmed parts) for the dry run's estimate: binaries stripped,
then xz. Measured on 2026-12-03: a 59.0 MiB archive for 376 MiB installed here (Ray 2.60.0, polars 2.1.0)."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def needed() -> dict[str, str]:
    """``{distribution: version}`` of everything to fetch: :data:`ROOTS` and their requirements (for
    Linux, Python 3.12, the extras the project uses) that the GPU image lacks, at this environment's
    versions."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    environment = {
        **default_environment(),
        "python_version": "3.12",
        "python_full_version": "3.12.0",
        "sys_platform": "linux",
    }
    found: dict[str, str] = {}
    todo = [(name, frozenset(SKIPPED_EXTRAS.get(name, ()))) for name in ROOTS]
    while todo:
        name, extras = todo.pop()
        key = canonical(name)
        if key in ON_DEVICE or key in LEFT_OUT or key.startswith("nvidia-") or key == "triton":
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(
                f"device_bundle: {name} is needed but not installed here (pip install -e '.[test]' first)"
            ) from None
        if key in found:
            continue
        found[key] = dist.version
        for text in dist.requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            wanted = marker is None or any(
                marker.evaluate({**environment, "extra": extra}) for extra in (*extras, "")
            )
            if wanted:
                todo.append((requirement.name, frozenset(requirement.extras)))
    return dict(sorted(found.items()))


def installed_bytes(name: str) -> int:
    """Bytes of ``name``'s installed files here, less what :data:`RAY_SLIM` removes."""
    dist = metadata.distribution(name)
    total = 0
    for file in dist.files or []:
        path = str(file)
        if "__pycache__" in path or (
            name == "ray" and any(Path(path).match(p) or path.startswith(p + "/") for p in RAY_SLIM)
        ):
            continue
        located = Path(str(dist.locate_file(file)))
        if located.is_file():
            total += located.stat().st_size
    return total


def tree_bytes() -> int:
    """What a device call sends of the working tree: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return sum(
        (ROOT / name).stat().st_size
        for name in listed.decode().split("\0")
        if name and (ROOT / name).is_file()
    )


def slim(site: Path) -> int:
    """Remove :data:`RAY_SLIM` from an installed ``site``; returns the bytes removed."""
    removed = 0
    for pattern in RAY_SLIM:
        for path in site.glob(pattern):
            if path.is_dir():
                removed += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                shutil.rmtree(path)
            elif path.is_file():
                removed += path.stat().st_size
                path.unlink()
    return removed


def strip_binaries(site: Path) -> int:
    """``strip --strip-unneeded`` every ELF file over 1 MiB (symbols for debuggers only; the dynamic
    symbols that loading needs stay); returns the bytes saved (0 without ``strip``)."""
    if shutil.which("strip") is None:
        return 0
    saved = 0
    for path in site.rglob("*"):
        if not path.is_file() or path.is_symlink() or path.stat().st_size < 2**20:
            continue
        with path.open("rb") as handle:
            if handle.read(4) != b"\x7fELF":
                continue
        before = path.stat().st_size
        if subprocess.run(["strip", "--strip-unneeded", str(path)], capture_output=True).returncode == 0:
            saved += before - path.stat().st_size
    return saved


def build(packages: dict[str, str], work: Path) -> Path:
    site = work / "site"
    pins = [f"{name}=={version}" for name, version in packages.items()]
    platforms = [flag for platform in PLATFORMS for flag in ("--platform", platform)]
    common = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", *platforms]
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "download", "--no-deps", *common, "-d", str(WHEELS), *pins], check=True)
    wanted = {canonical(name): version for name, version in packages.items()}
    wheels = [
        w
        for w in sorted(WHEELS.glob("*.whl"))
        if wanted.get(canonical(w.name.split("-")[0])) == w.name.split("-")[1]
    ]
    subprocess.run(
        [
            *pip,
            "install",
            "--no-deps",
            "--no-compile",
            "--no-index",
            *common,
            "--target",
            str(site),
            *map(str, wheels),
        ],
        check=True,
    )
    slimmed, stripped = slim(site), strip_binaries(site)
    print(
        f"device_bundle: Ray slimmed by {slimmed / 2**20:.1f} MiB, "
        f"binaries stripped by {stripped / 2**20:.1f} MiB"
    )
    BUNDLE.parent.mkdir(exist_ok=True)
    with tarfile.open(BUNDLE, "w:xz", preset=6) as archive:
        for path in sorted(site.iterdir()):
            archive.add(path, arcname=path.name)
    return BUNDLE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be fetched and estimate the size; fetch nothing",
    )
    parser.add_argument("--json", action="store_true", help="print the dry run as JSON")
    args = parser.parse_args(argv)
    packages = needed()
    tree = tree_bytes()
    if args.dry_run:
        estimate = int(sum(installed_bytes(name) for name in packages) * COMPRESSION)
        fits = estimate + tree <= LIMIT_BYTES
        if args.json:
            print(
                json.dumps(
                    {
                        "packages": packages,
                        "estimate_bytes": estimate,
                        "tree_bytes": tree,
                        "limit_bytes": LIMIT_BYTES,
                        "fits": fits,
                    }
                )
            )
        else:
            for name, version in packages.items():
                print(f"  {name}=={version}")
            print(
                f"device_bundle: {len(packages)} packages; archive about {estimate / 2**20:.1f} MiB "
                f"+ tree {tree / 2**20:.1f} MiB "
                f"= {(estimate + tree) / 2**20:.1f} MiB of {LIMIT_BYTES / 2**20:.0f} MiB (estimate)"
            )
        return 0 if fits else 1
    with tempfile.TemporaryDirectory(prefix="device-bundle-") as work:
        archive = build(packages, Path(work))
    size = archive.stat().st_size
    total = size + tree
    print(
        f"device_bundle: {archive.relative_to(ROOT)} {size / 2**20:.1f} MiB + tree {tree / 2**20:.1f} MiB = "
        f"{total / 2**20:.1f} MiB of {LIMIT_BYTES / 2**20:.0f} MiB"
    )
    if total > LIMIT_BYTES:
        print(
            f"device_bundle: DOES NOT FIT: {total - LIMIT_BYTES} bytes over the {LIMIT_BYTES // 2**20} MiB "
            "a device call carries",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
