"""The Python API (``pixart_batch.generate``, ...): the CLI's errors, rows and results, from Python.

Every bad-input case of ``test_bad_input.py`` is run through the CLI and through the API: the API raises
the documented :class:`pixart_batch.UserError` whose message is the CLI's line. A run through the API
gives the same rows as the CLI's on the same input; ``generate`` runs twice in one process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import test_bad_input as bad
from helpers import recipe_file

import pixart_batch
from pixart_batch import api
from pixart_batch.api import OVERRIDES
from pixart_batch.cli import COLUMN_FLAGS, build_parser, main
from pixart_batch.errors import first_line

ROOT = Path(__file__).parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")


def _table(test) -> list[tuple]:
    """The parameter rows of one of ``test_bad_input``'s parametrized tests."""
    (mark,) = [mark for mark in test.pytestmark if mark.name == "parametrize"]
    return [tuple(row) for row in mark.args[1]]


def api_call(argv: list[str]):
    """What ``pixart-batch ARGV`` does, as a call of the API with keyword arguments."""
    args = build_parser().parse_args(argv)
    if args.command in ("status", "verify"):
        return getattr(pixart_batch, args.command)(args.output)
    overrides = {dest: getattr(args, dest) for dest in OVERRIDES if getattr(args, dest, None) is not None}
    columns = {dest: getattr(args, dest) for dest in COLUMN_FLAGS if getattr(args, dest) is not None}
    call = pixart_batch.generate if args.command == "generate" else pixart_batch.encode
    return call(args.prompts, args.output, config=args.config, **columns, **overrides)


def both_refuse(capsys, argv: list[str], output: Path) -> str:
    """The CLI's one line (exit 2) and the API's UserError carry the same message; output untouched."""
    message = bad.refused(capsys, argv, output)
    before = bad.snapshot(output)
    with pytest.raises(pixart_batch.UserError) as caught:
        api_call(argv)
    assert isinstance(caught.value, pixart_batch.PixartBatchError)
    assert message == f"pixart-batch: error: {first_line(caught.value, limit=None)}\n"
    assert bad.snapshot(output) == before
    return message


def bad_cases(tmp_path: Path, output: Path) -> list[list[str]]:
    """Every command line of ``test_bad_input``'s cases that needs no tiny checkpoint."""
    cases = []
    for number, (name, content, _) in enumerate(_table(bad.test_bad_prompt_files)):
        prompts = tmp_path / f"{number}-{name}"
        prompts.write_bytes(content)
        cases.append(bad.generate(prompts, output))
    good = tmp_path / "p.txt"
    good.write_text(bad.GOOD)
    cases.append(bad.generate(tmp_path / "missing.txt", output))
    in_range = _table(bad.test_duplicate_keys_and_out_of_range_numbers_in_a_config)
    configs = [("generation:\n  steps: 3\n", 0), *in_range]
    for number, (text, _) in enumerate(configs):
        config = tmp_path / f"c{number}.yaml"
        config.write_text(text)
        cases.append(["generate", "--config", str(config), "--prompts", str(good), "--output", str(output)])
    for extra, _ in _table(bad.test_bad_sampling_settings_are_refused):
        cases.append(bad.generate(good, output, *extra))
    cases.append(bad.generate(good, output, "--model", str(tmp_path / "no-such-model")))
    cases.append(bad.generate(good, output, "--prompt-column", "caption"))
    return cases


def test_every_bad_input_is_a_user_error_with_the_clis_message(tmp_path, capsys, existing_output):
    cases = bad_cases(tmp_path, existing_output)
    assert len(cases) > 15
    messages = [both_refuse(capsys, argv, existing_output) for argv in cases]
    assert len(set(messages)) == len(messages)


def test_unwritable_output_and_not_an_output(tmp_path, capsys, tiny_model):
    good = tmp_path / "p.txt"
    good.write_text(bad.GOOD)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    both_refuse(capsys, bad.generate(good, blocker / "out"), tmp_path)
    for command in ("status", "verify"):
        assert "not a pixart-batch output" in both_refuse(capsys, [command, str(tmp_path)], tmp_path)


def test_overrides_by_flag_name_dotted_key_and_dict():
    from pixart_batch.api import load_run_config

    options = {"generation.guidance_scale": 1.0}
    config = load_run_config(TINY, options, seed=7, batch_size=3, output__format="webdataset")
    generation = config.generation
    assert (generation.seed, generation.guidance_scale, config.output.format) == (7, 1.0, "webdataset")
    assert config.stages.denoise.batch_size == config.stages.decode.batch_size == 3
    assert load_run_config(config) is config
    with pytest.raises(pixart_batch.UserError, match="nonsense"):
        load_run_config(TINY, generation__nonsense=1)
    with pytest.raises(pixart_batch.UserError, match="prompts: give a path"):
        pixart_batch.plan(12, config=TINY)


def test_importing_the_api_imports_nothing_heavy():
    code = (
        "import sys, pixart_batch\n"
        "from pixart_batch import generate, plan, UserError\n"
        "heavy = [m for m in ('torch', 'ray', 'datasets', 'diffusers', 'pyarrow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plan_reads_a_datasets_object_as_its_parquet_file(tmp_path, tiny_model):
    import datasets

    captions = ["a red fox", "a blue bird --ar 1:2", "a green frog"]
    dataset = datasets.Dataset.from_dict({"caption": captions, "label": ["fox", "bird", "frog"]})
    table = tmp_path / "prompts.parquet"
    dataset.to_parquet(str(table))
    columns: dict[str, Any] = {"prompt_column": "caption"}
    from_file = api.plan(str(table), config=TINY, **columns).to_dict()
    assert from_file["prompts"] == 3
    assert api.plan(dataset, config=TINY, **columns).to_dict() == from_file
    assert api.plan(dataset.to_iterable_dataset(), config=TINY, **columns).to_dict() == from_file
    as_json = api.plan(dataset, config=TINY, **columns).as_json()  # type: ignore[attr-defined]
    assert json.loads(as_json) == json.loads(json.dumps(from_file))
    with pytest.raises(pixart_batch.UserError, match="'caption'"):
        api.plan(dataset, config=TINY)


def rows(output: Path) -> dict[str, tuple]:
    """``{key: (seed, sha256, prompt)}`` of every committed row."""
    import pyarrow.parquet as pq

    table = pq.read_table(output / "data", columns=["key", "seed", "sha256", "prompt"])
    return {r["key"]: (r["seed"], r["sha256"], r["prompt"]) for r in table.to_pylist()}


@pytest.mark.slow
def test_api_twice_in_one_process_gives_the_clis_rows(tmp_path, capsys, tiny_model):
    """Local executor: two ``generate`` calls in this process (the second in another thread) and one CLI
    run, same prompts and recipe: the same rows; the progress callback gets the lines, stderr none; a
    re-run has nothing to do."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a lighthouse on a cliff\na tall tower --ar 1:2\na red fox\n")
    config = recipe_file(tmp_path / "c.yaml", {"generation.num_inference_steps": 2})
    lines: list[str] = []
    capsys.readouterr()
    local = {"config": config, "executor": "local"}
    first = pixart_batch.generate(prompts, tmp_path / "a", **local, progress=lines.append)
    assert "[pixart-batch]" not in capsys.readouterr().err and any("generate:" in line for line in lines)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    made: list = []
    worker = threading.Thread(  # not the main thread: no signal handler may be installed (none can be)
        target=lambda: made.append(
            pixart_batch.generate(str(prompts), str(tmp_path / "b"), config=str(config))
        )
    )
    worker.start()
    worker.join()
    (second,) = made
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers
    argv = ["generate", "--config", str(config), "--prompts", str(prompts), "--output", str(tmp_path / "c")]
    assert main([*argv, "--executor", "local"]) == 0
    assert first.images_generated == second.images_generated == 3 and first.images_failed == 0
    assert json.loads(first.as_json())["images_generated"] == 3
    assert rows(tmp_path / "a") == rows(tmp_path / "b") == rows(tmp_path / "c")
    again = pixart_batch.generate(prompts, tmp_path / "a", config=config, executor="local")
    assert again.nothing_to_do and again.images_generated == 0
    assert pixart_batch.verify(tmp_path / "a").exit_code == 0
    assert pixart_batch.status(tmp_path / "a")["total"]["done"] == 3


@pytest.mark.slow
def test_ray_executor_twice_in_one_process(tmp_path, tiny_model):
    """The Ray executor twice in one process: the second call reuses the Ray the first one started."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a lighthouse on a cliff\na red fox\n")
    config = recipe_file(tmp_path / "c.yaml", {"generation.num_inference_steps": 2})
    first = pixart_batch.generate(prompts, tmp_path / "a", config=config, executor="ray")
    second = pixart_batch.generate(prompts, tmp_path / "b", config=config, executor="ray")
    assert first.images_generated == second.images_generated == 2
    assert rows(tmp_path / "a") == rows(tmp_path / "b")


@pytest.mark.slow
def test_readmes_python_example_gives_the_clis_rows(tmp_path, monkeypatch, capsys, tiny_model):
    """README's "From Python" example, as written (warnings as errors) from a fresh folder, then the CLI
    with the same prompts, recipe and steps: the same rows (keys, seeds, sha256)."""
    import re
    import warnings

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    body = readme.split("\n## From Python", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"^```python\n(.*?)^```", body, flags=re.S | re.M)
    monkeypatch.chdir(tmp_path)
    for name in ("configs", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_snippet"})
    assert "refused: " in capsys.readouterr().out
    argv = ["generate", "--config", "configs/tiny.yaml", "--prompts", "examples/prompts.txt", "--steps", "2"]
    assert main([*argv, "--output", "out/cli"]) == 0
    api_rows = rows(tmp_path / "out" / "demo-py")
    assert api_rows and api_rows == rows(tmp_path / "out" / "cli")
