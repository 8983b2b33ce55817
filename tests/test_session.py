"""One output session for every command that writes (issue 21's situations 1-5, 7, 8): validate first,
re-check under the lock, remove only your own; a refused ``export`` or ``score`` leaves the output
byte-identical (its lock file aside), and a finished export is never removed by another command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import recipe_file, tiny_config

from pixart_batch.cli import main
from pixart_batch.run import run_generate

PROMPTS = ["a red fox in the snow", "a cat on a chair --ar 1:2", "a blue house by the sea", "a bowl of fruit"]
LOCK = ".pixart-batch.lock"


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` but the lock file."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != LOCK
    }


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory, prompts, tiny_model) -> Path:
    """An unscored output of 4 images, one per shard."""
    output = tmp_path_factory.mktemp("session") / "out"
    run_generate(tiny_config(**{"output.rows_per_shard": 1}), str(prompts), str(output))
    return output


def copy_of(made: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(made, target)
    return target


# -- 1: two exports into one new folder
def test_an_export_that_finds_the_folder_finished_under_the_lock_removes_nothing(
    made, tmp_path, capsys, monkeypatch
):
    from pixart_batch import export as export_module

    target = tmp_path / "new"
    real_pick, done = export_module._pick, list[int | None]()

    def another_export_finishes_first(*args, **kwargs):
        picked = real_pick(*args, **kwargs)
        if not done:  # the short export, started a moment later, finishes while this one reads its source
            done.append(None)
            done[0] = main(
                ["export", str(made), "--where", "image_index == 0 and seed >= 0", "--to", str(target)]
            )
        return picked

    monkeypatch.setattr(export_module, "_pick", another_export_finishes_first)
    code, out, err = run(capsys, "export", str(made), "--where", "seed >= 0", "--to", str(target))
    assert done == [0]
    assert code == 2 and "is a pixart-batch output already" in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.undo()
    code, out, err = run(capsys, "verify", str(target))
    assert code == 0, out + err  # the finished export is whole
    assert (target / "README.md").is_file() and len(list((target / "data").rglob("*.parquet"))) == len(
        PROMPTS
    )


def test_an_export_stopped_before_it_finished_is_started_again(made, tmp_path, capsys, monkeypatch):
    from pixart_batch import export as export_module
    from pixart_batch.output.session import OutputSession

    target = tmp_path / "stopped"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "_copy", killed)
    monkeypatch.setattr(OutputSession, "_roll_back", lambda self: False)  # as if SIGKILLed: nothing undone
    assert main(["export", str(made), "--where", "seed >= 0", "--to", str(target)]) == 130
    assert (target / "settings.json").is_file() and not (target / "README.md").exists()
    monkeypatch.undo()
    code, out, err = run(capsys, "export", str(made), "--where", "seed >= 0", "--to", str(target))
    assert code == 0 and "stopped before it finished; starting it again" in err, err
    assert run(capsys, "verify", str(target))[0] == 0


def test_a_failed_export_into_a_new_folder_leaves_no_folder(made, tmp_path, capsys, monkeypatch):
    from pixart_batch import export as export_module

    def breaks(*args, **kwargs):
        raise OSError("disk went away")

    monkeypatch.setattr(export_module, "_copy", breaks)
    with pytest.raises(OSError):
        main(["export", str(made), "--where", "seed >= 0", "--to", str(tmp_path / "new")])
    assert not (tmp_path / "new").exists()


# -- 2, 3: score on a damaged output
def test_score_of_an_output_with_a_truncated_shard_changes_nothing(made, tmp_path, prompts, capsys):
    output = copy_of(made, tmp_path)
    shard = sorted((output / "data").rglob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-200])
    before = snapshot(output)
    code, out, err = run(capsys, "score", str(output), "--model", "tiny")
    assert code == 2 and f"{shard}: damaged shard" in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(output) == before
    # the generate the message advises is not refused, and then the score runs
    run_generate(tiny_config(**{"output.rows_per_shard": 1}), str(prompts), str(output))
    code, out, err = run(capsys, "score", str(output), "--model", "tiny")
    assert code == 0, err
    assert run(capsys, "verify", str(output))[0] == 0


def test_an_image_that_does_not_decode_gets_null_scores(made, tmp_path, capsys):
    import pyarrow.parquet as pq

    output = copy_of(made, tmp_path)
    shard = sorted((output / "data").rglob("*.parquet"))[1]
    table = pq.read_table(shard)
    image = table.column("image").to_pylist()
    image[0] = {"bytes": b"\x89PNG not really", "path": image[0]["path"]}
    broken = table.set_column(table.schema.get_field_index("image"), "image", [image])
    pq.write_table(broken.replace_schema_metadata(table.schema.metadata), shard)
    code, out, err = run(capsys, "score", str(output), "--model", "tiny")
    assert code == 0, err
    assert "1 images could not be decoded, their scores are null" in err, err
    scores = {
        row["key"]: row["clip_score"]
        for s in (output / "data").rglob("*.parquet")
        for row in pq.read_table(s).to_pylist()
    }
    assert scores[table.column("key")[0].as_py()] is None
    assert sum(score is not None for score in scores.values()) == len(PROMPTS) - 1
    code, out, err = run(capsys, "score", str(output), "--model", "tiny")
    assert code == 0 and f"({len(PROMPTS)} already scored)" in err, err


# -- 4: a score model whose real weight file is missing
def test_a_score_model_without_the_file_transformers_loads_is_refused_before_writing(
    made, tmp_path, capsys, prompts
):
    import torch
    from safetensors.torch import save_file

    from pixart_batch.tiny_clip import cached_tiny_clip

    output = copy_of(made, tmp_path)
    clip = tmp_path / "clip"
    shutil.copytree(cached_tiny_clip(), clip)
    (clip / "model.safetensors").rename(clip / "pytorch_model.bin")  # a pickle name: never loaded
    save_file({"x": torch.zeros(1)}, str(clip / "other.safetensors"))
    before = snapshot(output)
    code, out, err = run(capsys, "score", str(output), "--model", str(clip))
    assert code == 2 and "no model.safetensors" in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(output) == before
    cut = tmp_path / "cut"
    shutil.copytree(cached_tiny_clip(), cut)
    (cut / "model.safetensors").write_bytes((cut / "model.safetensors").read_bytes()[:-64])
    code, out, err = run(capsys, "score", str(output), "--model", str(cut))
    assert code == 2 and "not a readable safetensors file" in err and snapshot(output) == before, err
    run_generate(tiny_config(**{"output.rows_per_shard": 1}), str(prompts), str(output))  # not refused
    assert run(capsys, "score", str(output), "--model", "tiny")[0] == 0


# -- 5: two score runs with different models
def test_a_score_run_rechecks_the_scoring_identity_under_the_lock(made, tmp_path, capsys, monkeypatch):
    import torch
    from safetensors.torch import save_file

    from pixart_batch import rescore

    output = copy_of(made, tmp_path)
    head = tmp_path / "head.safetensors"
    save_file({"weight": torch.ones(1, 16)}, str(head))
    real, done = rescore.resolve_score_model, list[object]()

    def slow_to_read_its_model(*args, **kwargs):
        found = real(*args, **kwargs)
        if not done:  # the other score run, with another model, finishes meanwhile
            done.append(True)
            done.append(main(["score", str(output), "--model", "tiny"]))
        return found

    monkeypatch.setattr(rescore, "resolve_score_model", slow_to_read_its_model)
    code, out, err = run(capsys, "score", str(output), "--model", "tiny", "--aesthetic-head", str(head))
    assert done == [True, 0]
    assert code == 2 and "already scored with" in err.strip().splitlines()[-1], err
    import json

    settings = json.loads((output / "settings.json").read_text())
    assert settings["score"]["aesthetic_head"] is None  # the first model's identity: the one its scores have


# -- 7: a store where the output writes a file
@pytest.mark.parametrize("name", ["README.md", "settings.json", "run_report.json"])
def test_a_store_in_place_of_an_output_file_is_refused(made, tmp_path, prompts, capsys, name):
    output = copy_of(made, tmp_path)
    before = snapshot(output)
    code, out, err = run(
        capsys, "generate", "--config", "configs/tiny.yaml", "--prompts", str(prompts),
        "--output", str(output), "--store", str(output / name), "--executor", "local",
    )  # fmt: skip
    assert code == 2 and "a file the output" in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(output) == before


def test_a_store_inside_a_file_is_refused(tmp_path, prompts, capsys, tiny_model):
    (tmp_path / "file").write_text("mine")
    code, out, err = run(
        capsys, "generate", "--config", "configs/tiny.yaml", "--prompts", str(prompts),
        "--output", str(tmp_path / "o"), "--store", str(tmp_path / "file" / "store"), "--executor", "local",
    )  # fmt: skip
    assert code == 2 and "inside the file" in err and not (tmp_path / "o").exists(), err


# -- 8: an input whose name looks like a temporary
def test_a_prompt_file_named_like_a_temporary_is_never_removed(made, tmp_path, capsys):
    output = copy_of(made, tmp_path)
    mine = output / ".tmp-0123456789ab-prompts.txt"
    mine.write_text("\n".join([*PROMPTS, "one more prompt"]) + "\n")
    stray = output / "data" / ".tmp-0123456789ab-train.parquet"  # a crashed writer's: removed
    stray.write_bytes(b"half")
    recipe = recipe_file(tmp_path / "recipe.yaml", {"output.rows_per_shard": 1})
    for _ in range(2):
        code, out, err = run(
            capsys,
            "generate",
            "--config",
            str(recipe),
            "--prompts",
            str(mine),
            "--output",
            str(output),
            "--executor",
            "local",
        )
        assert code == 0, err
        assert mine.is_file() and not stray.exists()
    assert run(capsys, "verify", str(output))[0] == 0


def test_a_refused_generate_under_the_lock_restores_the_settings(made, tmp_path):
    """A session that changed settings.json and committed no data puts it back when it fails."""
    from pixart_batch.output import OutputDataset
    from pixart_batch.output.session import OutputSession

    output = copy_of(made, tmp_path)
    before = (output / "settings.json").read_bytes()
    with pytest.raises(RuntimeError), OutputSession(OutputDataset(str(output)), "run1") as session:
        session.write_settings({"changed": True})
        raise RuntimeError("later failure")
    assert (output / "settings.json").read_bytes() == before
