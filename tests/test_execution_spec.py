"""Executors are built from the run's execution spec alone (issue 25): they read no config and never
branch on a stage's name; a stage setting the chosen executor cannot honour is named in one line; what
a run changes in its process (Ray Data's settings, environment variables, SIGTERM's handler) is put back
when it ends."""

from __future__ import annotations

import ast
import logging
import os
import signal
from contextlib import nullcontext
from pathlib import Path

import pytest
from helpers import copy_prompts, tiny_config

from pixart_batch.execution import ExecutionSpec
from pixart_batch.executors import make_executor
from pixart_batch.executors.base import ignored_line
from pixart_batch.spec import RunSpec
from pixart_batch.stages import STAGES

EXECUTORS = Path(__file__).parent.parent / "pixart_batch" / "executors"
STAGE_NAMES = {*STAGES, "clean", "write"}
TREES = {path: ast.parse(path.read_text(), str(path)) for path in sorted(EXECUTORS.glob("*.py"))}
"""Parsed when this module is collected, before a test has started a thread (see tests/test_layering.py's
TREES: CPython 3.11's ``ast.parse`` races a parse in another thread)."""


def _offences(path: Path) -> list[str]:
    """Where a module imports the config or the run spec, reads a ``.config`` attribute or compares
    something with a stage's name."""
    found = []
    tree = TREES[path] if path in TREES else ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom):
            names = {alias.name for alias in node.names}
            if (node.module or "").split(".")[-1] == "config" or names & {"RunConfig", "RunSpec"}:
                found.append(f"{where} imports {', '.join(sorted(names))} from {node.module}")
        elif isinstance(node, ast.Name) and node.id in ("RunConfig", "RunSpec"):
            found.append(f"{where} names {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in ("config", "RunConfig", "RunSpec"):
            found.append(f"{where} reads .{node.attr}")
        elif isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                values = operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand]
                named = [v.value for v in values if isinstance(v, ast.Constant) and v.value in STAGE_NAMES]
                if named:
                    found.append(f"{where} compares with the stage name {named[0]!r}")
    return found


def test_no_executor_reads_the_config_or_branches_on_a_stage_name():
    modules = sorted(TREES)
    assert len(modules) >= 5
    assert [offence for path in modules for offence in _offences(path)] == []


def test_the_check_sees_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from ..config import RunConfig\n"
        "def f(self, name):\n"
        "    threads = 2 if name == 'generate' else 1\n"
        "    return self.config.stages, name in ('denoise', 'x'), threads\n"
    )
    assert len(_offences(sample)) == 4, _offences(sample)


# --------------------------------------------------------------------------- settings an executor ignores


def _executor(name: str, **overrides):
    return make_executor(name, ExecutionSpec.build(tiny_config(**overrides)))


def test_the_local_executor_names_the_stage_settings_it_ignores_in_one_line():
    placed = {"stages.decode.colocate": True, "stages.denoise.concurrency": [1, 2]}
    line = ignored_line(_executor("local", **placed))
    assert line is not None and "\n" not in line
    assert line.startswith(
        "warning: the local executor ignores stages.denoise.concurrency, stages.decode.colocate ("
    ), line
    shares = {"stages.denoise.num_gpus": 0.5, "stages.encode.num_cpus": 2, "stages.write.batch_size": 7}
    assert _executor("local", **shares).ignored() == ["stages.encode.num_cpus", "stages.denoise.num_gpus"]
    whole = {"stages.denoise.num_gpus": 1, "stages.denoise.batch_size": 3, "stages.clean.batch_size": 9}
    assert _executor("local", **whole).ignored() == []  # one GPU and every batch size: honoured
    assert ignored_line(_executor("local")) is None  # the recipe's defaults: nothing to say


def test_the_ray_executor_honours_every_stage_setting():
    placed = {"stages.decode.colocate": True, "stages.denoise.concurrency": [1, 2]}
    more = {"stages.denoise.num_gpus": 0.5, "stages.encode.num_cpus": 2, "stages.write.batch_size": 7}
    executor = _executor("ray", **placed, **more)
    assert executor.execution.changed and ignored_line(executor) is None


def test_a_local_run_says_what_it_ignores_once_through_its_log(tmp_path, tiny_model):
    from pixart_batch.run import execute, prepare_run

    prompts = copy_prompts("mixed.txt", tmp_path)
    placed = {"ray.executor": "local", "stages.decode.colocate": True, "stages.denoise.concurrency": 2}
    lines: list[str] = []
    execute(
        prepare_run(tiny_config(**placed), str(prompts), str(tmp_path / "out"), dry_run=True), lines.append
    )
    warned = [line for line in lines if "ignores" in line]
    assert warned == [
        "warning: the local executor ignores stages.denoise.concurrency, stages.decode.colocate "
        f"({make_executor('local', ExecutionSpec.build(tiny_config())).ignores_why})"
    ], lines
    lines.clear()
    plain = {"ray.executor": "local"}
    execute(
        prepare_run(tiny_config(**plain), str(prompts), str(tmp_path / "plain"), dry_run=True), lines.append
    )
    assert not [line for line in lines if "ignores" in line], lines


def test_the_run_spec_gives_each_stage_its_constructor_arguments(tiny_model):
    config = tiny_config(**{"model.path": str(tiny_model)})
    spec = RunSpec.build(config)
    separate = spec.execution()
    assert [stage.name for stage in separate.generate] == ["denoise", "decode"]
    assert separate.generate[0].args == {"spec": spec.denoise_spec()} and separate.generate[0].starts_images
    assert separate.encode.args == {"spec": spec.encode_spec()} and separate.generate[1].reports_success
    colocated = RunSpec.build(tiny_config(**{"model.path": str(tiny_model), "stages.decode.colocate": True}))
    [stage] = colocated.execution().generate
    assert stage.name == "generate" and stage.source == "denoise" and stage.reports_success
    assert set(stage.args) == {"denoise", "decode", "decode_batch_size"}


# --------------------------------------------------------------------------- the process put back


def test_a_ray_run_puts_back_every_setting_it_changed(monkeypatch):
    """Without starting Ray (``init_ray`` stubbed): the caller's own Ray Data settings, the ``ray.data``
    logger's level, the environment and SIGTERM's handler are as they were after the run, however it ends."""
    import pixart_batch.executors.ray as ray_executor
    from pixart_batch.executors.ray_setup import CONTEXT_FIELDS

    monkeypatch.setattr(ray_executor, "init_ray", lambda execution: None)
    from ray.data import DataContext

    context = DataContext.get_current()
    logger = logging.getLogger("ray.data")
    monkeypatch.setattr(context, "max_errored_blocks", 7)  # the caller's settings
    monkeypatch.setattr(context.execution_options, "preserve_order", True)
    monkeypatch.setattr(logger, "level", logging.DEBUG)
    before = {name: getattr(context, name) for name in CONTEXT_FIELDS}
    handler = signal.getsignal(signal.SIGTERM)
    for ending in ("returns", "raises"):
        executor = make_executor("ray", ExecutionSpec.build(tiny_config()))
        with pytest.raises(RuntimeError) if ending == "raises" else nullcontext():
            try:
                executor.start()
                assert context.max_errored_blocks == 0 and logger.level == logging.WARNING  # the run's
                context.execution_options.preserve_order = False
                os.environ["PIXART_BATCH_TEST_SET_BY_A_RUN"] = "1"
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                if ending == "raises":
                    raise RuntimeError("the run failed")
            finally:
                executor.close()
        assert {name: getattr(context, name) for name in CONTEXT_FIELDS} == before
        assert context.max_errored_blocks == 7 and context.execution_options.preserve_order is True
        assert logger.level == logging.DEBUG
        assert "PIXART_BATCH_TEST_SET_BY_A_RUN" not in os.environ
        assert signal.getsignal(signal.SIGTERM) == handler


def test_a_local_run_puts_back_the_environment(monkeypatch):
    monkeypatch.setenv("PIXART_BATCH_TEST_KEPT", "before")
    executor = _executor("local")
    executor.start()
    os.environ["PIXART_BATCH_TEST_KEPT"] = "changed"  # e.g. the compile path's TORCHINDUCTOR_CACHE_DIR
    os.environ["PIXART_BATCH_TEST_SET_BY_A_RUN"] = "1"
    executor.close()
    assert os.environ["PIXART_BATCH_TEST_KEPT"] == "before"
    assert "PIXART_BATCH_TEST_SET_BY_A_RUN" not in os.environ
