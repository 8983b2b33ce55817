"""Re-runs into an existing output: nothing redone, new prompts only, settings guarded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import tiny_config

from pixart_batch.cli import main
from pixart_batch.run import run_generate

pytestmark = pytest.mark.slow

FIRST = ["a red fox in the snow --ar 1:2", "a blue house by the sea", "a cat --hw 96:160"]
ADDED = ["a green tree on a hill", "a blue house by the sea, at night"]


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, ray_session, tiny_model):
    root = tmp_path_factory.mktemp("incremental")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(FIRST) + "\n")
    report = run_generate(tiny_config(), str(prompts), str(root / "out"))
    return root, prompts, root / "out", report


def test_rerun_does_no_work_and_changes_no_image(first_run):
    root, prompts, output, first = first_run
    assert (
        first["images_generated"] == 3 and first["embeddings_encoded"] == 4
    )  # 3 captions + the empty negative
    shards = {k: v for k, v in snapshot(output).items() if k.startswith(("data/", "embeddings/"))}
    again = run_generate(tiny_config(), str(prompts), str(output))
    assert (again["images_generated"], again["images_skipped"]) == (0, 3)
    assert (again["embeddings_encoded"], again["embeddings_reused"]) == (0, 4)
    assert {k: v for k, v in snapshot(output).items() if k.startswith(("data/", "embeddings/"))} == shards


def test_appended_prompts_generate_only_new_images(tmp_path, first_run, ray_session):
    root, prompts, output, _ = first_run
    grown = tmp_path / "out"
    import shutil

    shutil.copytree(output, grown)
    more = tmp_path / "prompts.txt"
    more.write_text("\n".join(ADDED[:1] + FIRST + ADDED[1:]) + "\n")  # inserted and appended
    report = run_generate(tiny_config(), str(more), str(grown))
    assert (report["images_generated"], report["images_skipped"]) == (2, 3)
    assert (report["embeddings_encoded"], report["embeddings_reused"]) == (2, 4)
    assert main(["verify", str(grown)]) == 0

    # More images per prompt: only the new image indices are made.
    report = run_generate(tiny_config(**{"generation.images_per_prompt": 2}), str(more), str(grown))
    assert (report["images_generated"], report["images_skipped"]) == (5, 5)
    assert main(["verify", str(grown)]) == 0


@pytest.mark.parametrize(
    "flags, setting",
    [
        (["--seed", "1"], "generation.seed"),
        (["--steps", "5"], "generation.num_inference_steps"),
        (["--guidance-scale", "7"], "generation.guidance_scale"),
        (["--max-sequence-length", "60"], "model.max_sequence_length"),
        (["--image-format", "jpeg"], "output.image_format"),
        (["--model", "CKPT"], "checkpoint"),
        (["--config", "NEG"], "generation.negative_prompt"),
        (["--config", "DTYPE"], "stages.denoise.dtype"),
        (["--config", "NOCLEAN"], "model.clean_caption"),
        (["--config", "SIZE"], "generation.height"),
        (["--config", "FEWER"], "generation.images_per_prompt"),
    ],
)
def test_changed_settings_are_refused_and_output_untouched(tmp_path, first_run, capsys, flags, setting):
    root, prompts, output, _ = first_run
    recipes = {
        "NEG": "generation:\n  negative_prompt: blurry\n",
        "DTYPE": "stages:\n  denoise:\n    dtype: bfloat16\n",
        "NOCLEAN": "model:\n  clean_caption: false\n",
        "SIZE": "generation:\n  width: 320\n  height: 192\n",
        "FEWER": "generation:\n  images_per_prompt: 1\n",
    }
    base = Path("configs/tiny.yaml").read_text()
    if flags[1] in recipes:
        import yaml

        data = yaml.safe_load(base)
        for section, values in yaml.safe_load(recipes[flags[1]]).items():
            for key, value in values.items():
                data[section][key] = {**data[section][key], **value} if isinstance(value, dict) else value
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(data))
        flags = ["--config", str(path)]
    else:
        flags = ["--config", "configs/tiny.yaml", *flags]
    if "CKPT" in flags:
        from pixart_batch.tiny import build_tiny_checkpoint

        flags[flags.index("CKPT")] = str(build_tiny_checkpoint(tmp_path / "other", seed=9))
    target = output
    # an output recorded with 2 images per prompt, re-run asking for 1
    if setting == "generation.images_per_prompt":
        import shutil

        target = tmp_path / "grown"
        shutil.copytree(output, target)
        settings = (
            (target / "settings.json")
            .read_text()
            .replace('"generation.images_per_prompt": 1', '"generation.images_per_prompt": 2')
        )
        (target / "settings.json").write_text(settings)
    before = snapshot(target)
    capsys.readouterr()
    code = main(["generate", "--prompts", str(prompts), "--output", str(target), *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert f"setting '{setting}'" in err and err.count("\n") == 1 and "Traceback" not in err
    assert snapshot(target) == before
