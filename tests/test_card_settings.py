"""Model cards' recommended settings travel with the checkpoint: an LCM or DMD checkpoint run far from
them gets one warning line at the start of the run, naming the recipe to use; within range, none."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pixart_batch.cli import main
from pixart_batch.families import DMD_CARD, LCM_CARD, card_settings, card_warning

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")


def dry_run(capsys, tmp_path, model: Path, *flags: str) -> list[str]:
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\n")
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    capsys.readouterr()
    args = [
        "generate",
        "--config",
        TINY,
        "--prompts",
        str(prompts),
        "--output",
        str(out),
        "--model",
        str(model),
    ]
    code = main([*args, "--executor", "local", "--dry-run", *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return [line for line in (captured.out + captured.err).splitlines() if "model card" in line]


def test_an_lcm_checkpoint_run_with_the_tiny_recipe_is_warned_once(capsys, tmp_path):
    from pixart_batch.tiny import cached_tiny_checkpoint

    lcm = cached_tiny_checkpoint(0, scheduler="lcm")
    warned = dry_run(capsys, tmp_path, lcm)  # the tiny recipe: 20 steps, guidance 4.5
    assert warned == [
        "[pixart-batch] warning: this LCM checkpoint runs with 20 steps and guidance 4.5; "
        "its model card says 4 steps, "
        "guidance 0: use configs/pixart-lcm-1024.yaml (or --steps / --guidance-scale)"
    ]
    assert (
        dry_run(capsys, tmp_path, lcm, "--steps", "4", "--guidance-scale", "0") == []
    )  # the card's settings
    assert dry_run(capsys, tmp_path, lcm, "--steps", "8", "--guidance-scale", "1.5") == []  # within range
    assert len(dry_run(capsys, tmp_path, lcm, "--steps", "4")) == 1  # guidance alone is far


def test_a_dmd_checkpoint_far_from_its_card_is_warned(capsys, tmp_path):
    from pixart_batch.tiny import cached_tiny_checkpoint

    dmd = tmp_path / "dmd"
    shutil.copytree(cached_tiny_checkpoint(0, scheduler="ddpm"), dmd)  # DMD ships DDPM; known by its name
    (warned,) = dry_run(capsys, tmp_path, dmd, "--steps", "20", "--guidance-scale", "4.5")
    assert "this DMD checkpoint runs with 20 steps and guidance 4.5" in warned
    assert "1 step, timesteps [400], guidance 1: use configs/pixart-dmd-512.yaml" in warned
    assert dry_run(capsys, tmp_path, dmd, "--steps", "1", "--guidance-scale", "1") == []


def test_an_ordinary_checkpoint_is_not_warned(capsys, tmp_path, tiny_model):
    assert dry_run(capsys, tmp_path, tiny_model) == []


@pytest.mark.parametrize(
    ("scheduler", "name", "card"),
    [
        ("LCMScheduler", "PixArt-alpha/PixArt-LCM-XL-2-1024-MS", LCM_CARD),
        ("DDPMScheduler", "PixArt-alpha/PixArt-Alpha-DMD-XL-2-512x512", DMD_CARD),
        ("DDPMScheduler", "/data/checkpoints/dmd/", DMD_CARD),
        ("DDPMScheduler", "/home/admdx/model", None),
        ("DPMSolverMultistepScheduler", "/data/dmd-runs/PixArt-XL-2-1024-MS", None),
    ],
)
def test_which_card_a_checkpoint_carries(scheduler, name, card):
    assert card_settings(scheduler, name) is card


def test_the_recipes_named_are_shipped_and_follow_the_card():
    from pixart_batch.config import load_config

    for card in (LCM_CARD, DMD_CARD):
        generation = load_config(str(ROOT / card.recipe)).generation
        assert (generation.num_inference_steps, generation.guidance_scale) == (
            card.steps,
            card.guidance_scale,
        )
        assert card_warning(card, generation.num_inference_steps, generation.guidance_scale) is None
    assert tuple(load_config(str(ROOT / DMD_CARD.recipe)).generation.timesteps or ()) == DMD_CARD.timesteps
