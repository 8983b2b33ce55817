"""Bad input: one line naming what is wrong, exit status 2, no traceback, existing output untouched."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from pixart_batch.cli import main

GOOD = "a red fox in the snow\n"


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def refused(capsys, args: list[str], output: Path, *needles: str) -> str:
    before = snapshot(output)
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("pixart-batch: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert snapshot(output) == before
    return err


def generate(prompts: Path, output: Path, *extra: str) -> list[str]:
    return [
        "generate",
        "--config",
        "configs/tiny.yaml",
        "--prompts",
        str(prompts),
        "--output",
        str(output),
        *extra,
    ]


@pytest.mark.parametrize(
    "name, content, needles",
    [
        ("empty.txt", b"", [":", "no prompts (file is empty)"]),
        ("blank.txt", b"\n   \n\t\n", ["no prompts (only blank lines)"]),
        ("latin1.txt", b"a cat\ncaf\xe9 au lait\n", [":2:", "not valid UTF-8"]),
        ("flags.txt", b"a cat\n--ar 1:2\n", [":2:", "empty (only size flags)"]),
        ("zero-ar.txt", b"a cat --ar 0:1\n", [":1:", "--ar"]),
        ("zero-hw.txt", b"a cat\na dog --hw 0:512\n", [":2:", "--hw"]),
        ("nan-ar.txt", b"a cat --ar a:b\n", [":1:", "--ar"]),
        ("negative-hw.txt", b"a cat --hw -64:64\n", [":1:", "--hw"]),
        ("bad.jsonl", b'{"prompt": "a cat"}\n{"prompt": "a dog"\n', [":2:", "not valid JSON"]),
        ("noprompt.csv", b"text,id\na cat,1\n", ["no 'prompt' column"]),
        (
            "dupes.jsonl",
            b'{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n',
            [":2:", "duplicate id 'x'"],
        ),
        ("zero.jsonl", b'{"prompt": "a", "width": 0, "height": 64}\n', [":1:", "width"]),
        ("negative.csv", b"prompt,width,height\na cat,64,-8\n", ["height"]),
        (
            "twice.jsonl",
            b'{"prompt": "a"}\n{"prompt": "a cat", "prompt": "a dog"}\n',
            [":2: duplicate key 'prompt'"],
        ),
        ("twice.csv", b"prompt,tag,tag\na cat,x,y\n", ["column 'tag' appears more than once"]),
    ],
)
def test_bad_prompt_files(tmp_path, capsys, existing_output, name, content, needles):
    prompts = tmp_path / name
    prompts.write_bytes(content)
    refused(capsys, generate(prompts, existing_output), existing_output, name, *needles)


def test_missing_prompt_file(tmp_path, capsys, existing_output):
    refused(
        capsys, generate(tmp_path / "nope.txt", existing_output), existing_output, "nope.txt", "no such file"
    )


def test_unknown_config_key(tmp_path, capsys, existing_output):
    prompts = tmp_path / "p.txt"
    prompts.write_text(GOOD)
    config = tmp_path / "c.yaml"
    config.write_text("generation:\n  steps: 3\n")
    args = ["generate", "--config", str(config), "--prompts", str(prompts), "--output", str(existing_output)]
    refused(capsys, args, existing_output, "c.yaml", "'generation.steps'")


@pytest.mark.parametrize(
    "text, needles",
    [
        ("model: {path: tiny, path: other}\n", ["c.yaml:1: duplicate key 'path'"]),
        ("model:\n  path: tiny\n  path: other\n", ["c.yaml:3: duplicate key 'path' (first on line 2)"]),
        (
            "ray:\n  no_progress_timeout_s: -1\n",
            ["c.yaml: ray.no_progress_timeout_s: -1 is out of range (must be a finite"],
        ),
    ],
)
def test_duplicate_keys_and_out_of_range_numbers_in_a_config(
    tmp_path, capsys, existing_output, text, needles
):
    prompts = tmp_path / "p.txt"
    prompts.write_text(GOOD)
    config = tmp_path / "c.yaml"
    config.write_text(text)
    args = ["generate", "--config", str(config), "--prompts", str(prompts), "--output", str(existing_output)]
    refused(capsys, args, existing_output, *needles)


def test_missing_checkpoint(tmp_path, capsys, existing_output):
    prompts = tmp_path / "p.txt"
    prompts.write_text(GOOD)
    refused(
        capsys,
        generate(prompts, existing_output, "--model", str(tmp_path / "no-such-model")),
        existing_output,
        "no-such-model",
        "not found",
    )


def test_pickle_checkpoint_is_refused(tmp_path, capsys, existing_output, tiny_model):
    prompts = tmp_path / "p.txt"
    prompts.write_text(GOOD)
    unsafe = tmp_path / "unsafe"
    shutil.copytree(tiny_model, unsafe)
    weights = unsafe / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_name("diffusion_pytorch_model.bin"))
    refused(
        capsys,
        generate(prompts, existing_output, "--model", str(unsafe)),
        existing_output,
        "transformer",
        "only safetensors",
    )


def test_unwritable_output(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text(GOOD)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    refused(capsys, generate(prompts, blocker / "out"), tmp_path, "not writable")


def test_not_an_output_for_status_and_verify(tmp_path, capsys):
    for command in ("status", "verify"):
        refused(capsys, [command, str(tmp_path)], tmp_path, "not a pixart-batch output")


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--scheduler", "heun"], ["generation.scheduler", "heun"]),
        (["--guidance-scale", "nan"], ["generation.guidance_scale", "finite"]),
        (["--guidance-scale", "inf"], ["generation.guidance_scale", "finite"]),
        (["--guidance-scale", "-1"], ["generation.guidance_scale"]),
    ],
)
def test_bad_sampling_settings_are_refused(tmp_path, capsys, existing_output, extra, needles):
    prompts = tmp_path / "p.txt"
    prompts.write_text(GOOD)
    refused(capsys, generate(prompts, existing_output, *extra), existing_output, *needles)


def test_unsupported_checkpoint_classes_are_refused(tmp_path, capsys, existing_output, tiny_model):
    import json

    checkpoint = tmp_path / "ck"
    shutil.copytree(tiny_model, checkpoint)
    index = json.loads((checkpoint / "model_index.json").read_text())
    index["scheduler"] = ["my_schedulers", "FancyScheduler"]
    (checkpoint / "model_index.json").write_text(json.dumps(index))
    prompts = tmp_path / "p.txt"
    prompts.write_text(GOOD)
    refused(
        capsys,
        generate(prompts, existing_output, "--model", str(checkpoint)),
        existing_output,
        "my_schedulers.FancyScheduler",
        "no custom or remote code",
    )


def test_pipeline_class_that_is_not_a_string_is_refused(tmp_path, capsys, existing_output, tiny_model):
    import json

    checkpoint = tmp_path / "ck"
    shutil.copytree(tiny_model, checkpoint)
    index = json.loads((checkpoint / "model_index.json").read_text())
    index["_class_name"] = ["PixArtAlphaPipeline"]
    (checkpoint / "model_index.json").write_text(json.dumps(index))
    prompts = tmp_path / "p.txt"
    prompts.write_text(GOOD)
    args = generate(prompts, existing_output, "--model", str(checkpoint))
    refused(
        capsys, args, existing_output, "model_index.json: '_class_name' is ['PixArtAlphaPipeline'], expected"
    )


def test_quantization_without_its_package_is_refused(tmp_path, capsys, existing_output, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a)
    )
    config = tmp_path / "int8.yaml"
    config.write_text(
        Path("configs/tiny.yaml").read_text().replace("encode:  {", "encode:  {quantization: int8, ")
    )
    prompts = tmp_path / "p.txt"
    prompts.write_text(GOOD)
    args = ["generate", "--config", str(config), "--prompts", str(prompts), "--output", str(existing_output)]
    refused(capsys, args, existing_output, "quantization int8 needs torchao")


def test_long_error_texts_are_cut_between_words():
    from pixart_batch.errors import a_or_an, first_line, shorten

    host = "my-bucket.s3.eu-west-1.amazonaws.com"
    text = (
        "AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 6, "
        f"Could not resolve host: {host}"
    )
    error = OSError(text + "\nmore")
    whole = first_line(error, limit=None)
    assert whole.endswith(host) and "more" not in whole
    for limit in range(10, len(whole)):
        cut = first_line(error, limit=limit)
        assert len(cut) <= limit and cut.endswith("…"), (limit, cut)
        assert whole.startswith(cut[:-1]) and (host not in whole[: len(cut)] or host in cut)
        assert whole[len(cut) - 1] == " " or whole[len(cut) - 1] in ",:", (limit, cut)  # a word boundary
    assert first_line(error, limit=len(whole)) == whole
    assert first_line(error, limit=80, with_type=True).startswith("OSError: AWS Error")
    assert shorten("x" * 50, 10) == "x" * 9 + "…"  # one word longer than the limit: cut inside it
    assert first_line(ValueError()) == "ValueError"
    words = ("int", "float", "object", "list", "str")
    assert [a_or_an(w) for w in words] == ["an int", "a float", "an object", "a list", "a str"]
