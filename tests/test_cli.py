import subprocess
import sys


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys\n"
        "from pixart_batch.cli import build_parser\n"
        "try:\n    build_parser().parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'ray', 'datasets', 'pyarrow')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    assert "generate" in out and "encode" in out and "make-tiny-checkpoint" in out


def test_console_script_help_runs():
    result = subprocess.run(
        [sys.executable, "-m", "pixart_batch", "generate", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for flag in (
        "--config",
        "--prompts",
        "--output",
        "--model",
        "--seed",
        "--images-per-prompt",
        "--batch-size",
        "--steps",
        "--guidance-scale",
    ):
        assert flag in result.stdout


def test_make_tiny_checkpoint_command(tmp_path):
    from pixart_batch.cli import main

    assert main(["make-tiny-checkpoint", str(tmp_path / "ckpt"), "--seed", "1"]) == 0
    assert (tmp_path / "ckpt" / "model_index.json").is_file()


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    result = subprocess.run(
        [sys.executable, "-m", "pixart_batch", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip() == f"pixart-batch {version('pixart_batch')}"


def test_make_tiny_checkpoint_where_a_parent_or_the_directory_is_a_file(tmp_path, capsys):
    from pixart_batch.cli import main

    somefile = tmp_path / "somefile"
    somefile.write_text("mine")
    for target, needle in [
        (somefile / "x", f"{somefile / 'x'}: cannot be created, {somefile} is not a directory"),
        (somefile / "x" / "y", f"{somefile / 'x' / 'y'}: cannot be created, {somefile} is not a directory"),
        (somefile, f"{somefile}: exists and is not a directory"),
    ]:
        capsys.readouterr()
        assert main(["make-tiny-checkpoint", str(target)]) == 2
        err = capsys.readouterr().err
        assert (
            err.startswith(f"pixart-batch: error: {needle}; choose a new directory") and err.count("\n") == 1
        ), err
    assert somefile.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["somefile"]
