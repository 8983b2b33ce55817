"""benchmarks/throughput.py leaves the tracked RESULTS.md alone unless told (``--append``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_appends_to_results_only_with_append(monkeypatch):
    module = _module()
    seen: list[Any] = []

    def record(args: Any) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(module, "run_benchmark", record)
    assert module.main(["--preset", "tiny-cpu"]) == 0
    assert (
        module.main(["--preset", "tiny-cpu", "--no-append"]) == 0
    )  # the old flag: still accepted, the default now
    assert module.main(["--preset", "tiny-cpu", "--append"]) == 0
    assert [args.append for args in seen] == [False, False, True]
    source = (ROOT / "benchmarks" / "throughput.py").read_text(encoding="utf-8")
    assert "if args.append:" in source and "RESULTS.md" in source
