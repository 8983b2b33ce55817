"""Captions that lost text: diffusers' cleaning removes CJK and other scripts; the run says so in one
line (how many, and one of them) and counts them in its report (issue 23, item 6)."""

from __future__ import annotations

import json

import pytest

from pixart_batch.cli import main
from pixart_batch.stages.rows import lost_summary, lost_text


@pytest.mark.parametrize(
    ("prompt", "caption", "lost"),
    [
        ("一只可爱的猫坐在椅子上", "", True),
        ("a cat 一只可爱的猫坐在椅子上", "a cat", True),
        ("a red fox in the snow!", "a red fox in the snow", False),
        ("Ein Fuchs im Schnee", "ein fuchs im schnee", False),
        ("猫", "", False),  # one character: empty-caption territory, counted there
        ("http://example.com/x.png a fox", "a fox", True),
    ],
)
def test_lost_text(prompt, caption, lost):
    assert lost_text(prompt, caption) is lost


def test_lost_summary_is_deterministic():
    assert lost_summary(["", "b", "", "a"]) == (2, "b")
    assert lost_summary(["", ""]) == (0, None)


def test_a_run_says_which_captions_lost_their_text(tmp_path, capsys, tiny_model):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "一只可爱的猫坐在椅子上\n海边的一座蓝色房子\na red fox in the snow\n", encoding="utf-8"
    )
    output = tmp_path / "out"
    capsys.readouterr()
    code = main(
        ["generate", "--config", "configs/tiny.yaml", "--prompts", str(prompts), "--output", str(output)]
        + ["--executor", "local", "--steps", "2"]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [line for line in err.splitlines() if "lost most of their text" in line]
    assert len(lines) == 1 and lines[0].startswith("[pixart-batch] 2 prompts lost"), err
    assert "'海边的一座蓝色房子'" in lines[0] and "model.clean_caption: false" in lines[0]
    report = json.loads((output / "run_report.json").read_text())
    assert report["captions_lost"] == 2
