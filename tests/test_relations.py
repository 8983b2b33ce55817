"""Where the output, the store, the prompt file and the checkpoint may lie relative to each other and to
other outputs and stores: refused before anything is written, for local paths (symbolic links and ``..``
resolved) and object-store URIs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixart_batch.errors import OutputError
from pixart_batch.output.relations import RESERVED_DIRS, STORE_FORBIDDEN_DIRS, check_relations
from pixart_batch.ownership import MARKER_FILE

MARKER = json.dumps({"tool": "pixart-batch", "created": "2026-12-03T00:00:00Z"})
IDENTITY = json.dumps({"encoder": "abc", "d_model": 32})


def an_output(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER_FILE).write_text(MARKER)
    return path


def a_store(path: Path) -> Path:
    """A store's keyed folder (``ROOT/<key>``)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "store.json").write_text(IDENTITY)
    return path


def check(output, store=None, prompts=None, checkpoints=()):
    check_relations(
        str(output),
        str(store) if store else str(Path(output) / "embeddings"),
        prompts and str(prompts),
        checkpoints,
    )


def refused(match: str, *args, **kwargs) -> str:
    with pytest.raises(OutputError, match=match) as info:
        check(*args, **kwargs)
    text = str(info.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("folder", RESERVED_DIRS)
def test_output_inside_another_outputs_reserved_folder(tmp_path, folder):
    host = an_output(tmp_path / "host")
    text = refused("the output lies inside", host / folder / "nested")
    assert f"{host / folder}" in text and f"pixart-batch output {host}" in text
    check(host / "beside")  # a folder of its own inside another output is fine
    check(tmp_path / "other")


def test_output_inside_a_store(tmp_path):
    host = an_output(tmp_path / "host")
    keyed = a_store(host / "embeddings" / "0123456789abcdef")
    refused("inside", keyed / "parts" / "zz")  # the case: inside the host's embeddings/
    shared = a_store(tmp_path / "shared" / "0123456789abcdef")
    text = refused("the output lies inside the embedding store", shared / "parts" / "zz")
    assert str(shared) in text


def test_output_inside_or_equal_to_this_runs_store(tmp_path):
    refused("the output lies inside the embedding store", tmp_path / "s" / "out", store=tmp_path / "s")
    refused("the output lies inside the embedding store", tmp_path / "s", store=tmp_path / "s")
    check(tmp_path / "out", store=tmp_path / "s")  # beside it: fine
    check(tmp_path / "out", store=tmp_path / "out" / "embeddings")  # the default, given explicitly


@pytest.mark.parametrize("folder", STORE_FORBIDDEN_DIRS)
def test_store_inside_an_outputs_shards_gallery_or_quarantine(tmp_path, folder):
    other = an_output(tmp_path / "other")
    text = refused("the embedding store lies inside", tmp_path / "out", store=other / folder / "store")
    assert str(other / folder) in text
    # ... of this run's own output, which does not exist yet
    refused("the embedding store lies inside", tmp_path / "new", store=tmp_path / "new" / folder / "store")


def test_store_shared_through_another_outputs_embeddings_is_fine(tmp_path):
    other = an_output(tmp_path / "other")
    check(tmp_path / "out", store=other / "embeddings")
    check(tmp_path / "out", store=tmp_path / "out" / "stores")  # a folder of the output's own choosing


def test_store_inside_another_store(tmp_path):
    keyed = a_store(tmp_path / "shared" / "0123456789abcdef")
    refused(
        "the embedding store lies inside the embedding store", tmp_path / "out", store=keyed / "parts" / "s"
    )


def test_prompt_file_and_checkpoint_where_the_run_writes(tmp_path):
    out = tmp_path / "out"
    for inside in ("data/prompts.txt", ".work/p.txt", "quarantine/x/p.txt", "README.md", "settings.json"):
        text = refused("the prompt file lies inside", out, prompts=out / inside)
        assert f"the output {out} writes" in text
    refused("the prompt file lies inside", out, store=tmp_path / "s", prompts=tmp_path / "s" / "p.txt")
    check(out, prompts=out / "prompts.txt")  # beside the output's files: read, never written
    refused("the checkpoint lies inside", out, checkpoints=[str(out / "gallery" / "ckpt")])
    refused("the output is the checkpoint's folder", out, checkpoints=[str(out)])
    check(out, checkpoints=[str(tmp_path / "ckpt")])


def test_symbolic_links_and_dotdot_are_resolved(tmp_path):
    host = an_output(tmp_path / "host")
    (host / "data").mkdir()
    (tmp_path / "link").symlink_to(host / "data")
    refused("the output lies inside", tmp_path / "link" / "nested")
    refused("the output lies inside", f"{tmp_path}/elsewhere/../host/data/nested")
    refused("the embedding store lies inside", tmp_path / "out", store=tmp_path / "link" / "s")
    (tmp_path / "prompts").symlink_to(tmp_path / "out" / "data", target_is_directory=True)
    refused("the prompt file lies inside", tmp_path / "out", prompts=tmp_path / "prompts" / "p.txt")


@pytest.fixture()
def s3(monkeypatch):
    from helpers import s3_server

    with s3_server("pixart") as (client, env):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        client.put_object(Bucket="pixart", Key=f"host/{MARKER_FILE}", Body=MARKER.encode())
        client.put_object(Bucket="pixart", Key="stores/0123456789abcdef/store.json", Body=IDENTITY.encode())
        yield client


def test_object_store_uris(s3, tmp_path):
    refused("the output lies inside", "s3://pixart/host/data/nested")
    refused("the output lies inside", "s3://pixart/x/../host/quarantine/nested")
    refused("the output lies inside the embedding store", "s3://pixart/stores/0123456789abcdef/parts/zz")
    refused("the output lies inside the embedding store", "s3://pixart/s/out", store="s3://pixart/s")
    refused("the embedding store lies inside", "s3://pixart/out", store="s3://pixart/host/gallery/s")
    refused("the embedding store lies inside", "s3://pixart/out", store="s3://pixart/out/data/s")
    refused("the prompt file lies inside", "s3://pixart/out", prompts="s3://pixart/out/data/p.txt")
    check("s3://pixart/out", store="s3://pixart/host/embeddings")
    check("s3://pixart/out", prompts="s3://pixart/inputs/p.txt")
    # A local path and a bucket never overlap, whatever their names.
    check(tmp_path / "pixart" / "host" / "data" / "nested", store="s3://pixart/host/embeddings")


# --- whole runs: refused before anything is written; a refused run leaves nothing behind --------------


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def generate(capsys, *args: str, command: str = "generate") -> tuple[int, str, str]:
    from pixart_batch.cli import main

    capsys.readouterr()
    code = main([command, "--config", "configs/tiny.yaml", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_model):
    """A real output (local executor) and its prompt file."""
    from helpers import tiny_config

    from pixart_batch.run import run_generate

    root = tmp_path_factory.mktemp("relations")
    prompts = root / "prompts.txt"
    prompts.write_text("a red fox\na blue house --ar 1:2\n")
    run_generate(tiny_config(), str(prompts), str(root / "out"))
    return root, prompts, root / "out"


@pytest.mark.slow
def test_nested_output_and_store_are_refused_before_anything_is_written(made, capsys):
    root, prompts, out = made
    (out / "gallery").mkdir(exist_ok=True)
    (out / "gallery" / "prompts.txt").write_text("a cat\n")  # a prompt file where `gallery` writes
    before = snapshot(out)
    [key] = [p.name for p in (out / "embeddings").iterdir()]
    cases = [
        (["--output", str(out / "embeddings" / key / "parts" / "zz")], "the output lies inside"),
        (
            ["--output", str(root / "other"), "--store", str(out / "data" / "store")],
            "the embedding store lies inside",
        ),
        (["--output", str(out / "data" / "nested")], "the output lies inside"),
        (
            ["--output", str(out), "--prompts", str(out / "gallery" / "prompts.txt")],
            "the prompt file lies inside",
        ),
    ]
    for args, message in cases:
        if "--prompts" not in args:
            args = ["--prompts", str(prompts), *args]
        code, _, err = generate(capsys, *args)
        assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err
        assert snapshot(out) == before
    assert not (root / "other").exists() and not (out / "embeddings" / key / "parts" / "zz").exists()


@pytest.mark.slow
def test_a_checkpoint_refused_for_its_sample_size_leaves_nothing_and_the_corrected_run_succeeds(
    tmp_path, capsys, tiny_model
):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    config = json.loads((bad / "transformer" / "config.json").read_text())
    (bad / "transformer" / "config.json").write_text(json.dumps({**config, "sample_size": 8}))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\n")
    out = tmp_path / "out"
    code, _, err = generate(capsys, "--prompts", str(prompts), "--output", str(out), "--model", str(bad))
    assert code == 2 and "transformer sample_size 8 has no aspect-ratio table" in err and err.count("\n") == 1
    assert not out.exists()  # absent, as it was
    out.mkdir()
    code, _, err = generate(capsys, "--prompts", str(prompts), "--output", str(out), "--model", str(bad))
    assert code == 2 and list(out.iterdir()) == []  # empty, as it was
    code, _, err = generate(
        capsys, "--prompts", str(prompts), "--output", str(out), "--model", str(tiny_model)
    )
    assert code == 0, err


@pytest.mark.slow
def test_an_output_without_images_is_taken_over_by_other_settings(tmp_path, capsys, tiny_model):
    from pixart_batch.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\n")
    out = tmp_path / "out"
    code, _, err = generate(capsys, "--prompts", str(prompts), "--output", str(out), command="encode")
    assert code == 0, err
    assert json.loads((out / "settings.json").read_text())["generation.seed"] == 0
    code, captured, err = generate(capsys, "--prompts", str(prompts), "--output", str(out), "--seed", "2")
    assert code == 0, err
    assert (
        "holds no images yet: this run's settings replace its earlier ones "
        "(setting 'generation.seed' was 0, now 2)" in (captured + err)
    )
    assert json.loads((out / "settings.json").read_text())["generation.seed"] == 2
    # Now it holds an image: the guard protects it.
    code, _, err = generate(capsys, "--prompts", str(prompts), "--output", str(out), "--seed", "3")
    assert code == 2 and "setting 'generation.seed' is 3 but this output was generated with 2" in err
    assert main(["verify", str(out)]) == 0


@pytest.mark.slow
def test_an_output_nested_in_the_shards_is_left_alone_and_reported(made, tmp_path, capsys):
    import shutil

    from helpers import tiny_config

    from pixart_batch.run import run_generate

    _, prompts, out = made
    host = tmp_path / "host"
    shutil.copytree(out, host)
    nested = host / "data" / "nested"
    shutil.copytree(out, nested)  # made by an older version, which let it be put there
    (nested / "data" / "junk.parquet").write_bytes(b"not parquet")  # damaged, but not the host's to move
    (nested / "data" / ".tmp-0123456789ab-live.parquet").write_bytes(b"")  # its own live writer's temporary
    before = snapshot(nested)
    report = run_generate(tiny_config(), str(prompts), str(host))
    assert report["left_alone"] == [str(nested)] and report["quarantined"] == []
    assert (report["images_generated"], report["images_skipped"]) == (0, 2)
    assert snapshot(nested) == before


@pytest.mark.slow
def test_a_dry_run_writes_its_own_report(made, tmp_path, capsys):
    import shutil

    _, prompts, out = made
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    report, config = (copy / "run_report.json").read_bytes(), (copy / "run_config.json").read_bytes()
    code, _, err = generate(capsys, "--prompts", str(prompts), "--output", str(copy), "--dry-run")
    assert code == 0, err
    assert (copy / "run_report.json").read_bytes() == report and (
        copy / "run_config.json"
    ).read_bytes() == config
    assert json.loads((copy / "dry_run_report.json").read_text())["dry_run"] is True


@pytest.mark.slow
def test_a_run_refused_for_its_gpus_leaves_nothing(tmp_path, capsys, tiny_model, ray_session):
    from helpers import recipe_file

    from pixart_batch.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\n")
    recipe = recipe_file(tmp_path / "gpu.yaml", {"stages.denoise.num_gpus": 1})
    capsys.readouterr()
    code = main(
        [
            "generate",
            "--config",
            str(recipe),
            "--prompts",
            str(prompts),
            "--output",
            str(tmp_path / "out"),
            "--executor",
            "ray",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "need 1 GPUs at once" in err
    assert not (tmp_path / "out").exists()
