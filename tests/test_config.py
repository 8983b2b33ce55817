import pytest

from pixart_batch.config import RunConfig, load_config, with_overrides
from pixart_batch.errors import ConfigError


def test_recipes_load():
    from pathlib import Path

    names = sorted(p.stem for p in Path("configs").glob("*.yaml"))
    assert {
        "tiny",
        "pixart-alpha-1024",
        "pixart-sigma-1024",
        "pixart-sigma-2k",
        "pixart-lcm-1024",
        "pixart-dmd-512",
        "low-vram-8gb",
    } <= set(names)
    for name in names:
        config = load_config(f"configs/{name}.yaml")
        assert isinstance(config, RunConfig)
    lcm = load_config("configs/pixart-lcm-1024.yaml").generation
    assert (lcm.num_inference_steps, lcm.guidance_scale, lcm.scheduler) == (4, 0.0, "checkpoint")
    dmd = load_config("configs/pixart-dmd-512.yaml")
    assert (dmd.generation.timesteps, dmd.generation.num_inference_steps, dmd.model.components_from) == (
        [400],
        1,
        "PixArt-alpha/PixArt-XL-2-512x512",
    )
    low = load_config("configs/low-vram-8gb.yaml").stages
    assert low.encode.quantization == "int8" and low.decode.vae_tiling and low.decode.vae_slicing
    assert load_config("configs/pixart-alpha-1024.yaml").stages.denoise.num_gpus > 0
    assert load_config("configs/tiny.yaml").stages.denoise.device == "cpu"


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("generation:\n  sed: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'generation\.sed'"):
        load_config(path)


@pytest.mark.parametrize(
    "text, match",
    [
        ("generation:\n  seed: abc\n", "generation.seed"),
        ("stages:\n  denoise:\n    dtype: float8\n", "stages.denoise.dtype"),
        ("generation:\n  images_per_prompt: 0\n", "images_per_prompt"),
        ("stages:\n  decode:\n    concurrency: [3, 1]\n", "concurrency"),
        ("output:\n  image_format: gif\n", "image_format"),
        ("model: [1, 2]\n", "model"),
        ("generation: {seed: [\n", "not valid YAML"),
    ],
)
def test_bad_values_are_named(tmp_path, text, match):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_win_and_none_is_skipped():
    config = with_overrides(RunConfig(), {"generation.seed": 7, "generation.num_inference_steps": None})
    assert config.generation.seed == 7
    assert config.generation.num_inference_steps == 20
