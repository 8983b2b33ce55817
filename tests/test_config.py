import pytest

from pixart_batch.config import RunConfig, get_dotted, load_config, with_overrides
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


# --------------------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize(
    "text, where",
    [
        ("model: {path: A, path: B}\n", ":1: duplicate key 'path'"),
        ("model:\n  path: A\n  path: B\n", ":3: duplicate key 'path' (first on line 2)"),
        (
            "generation:\n  seed: 1\ngeneration:\n  seed: 2\n",
            ":3: duplicate key 'generation' (first on line 1)",
        ),
        (
            "stages:\n  denoise:\n    batch_size: 2\n    dtype: float32\n    batch_size: 4\n",
            ":5: duplicate key 'batch_size'",
        ),
        ("stages: {decode: {concurrency: [1, 2], concurrency: 1}}\n", ":1: duplicate key 'concurrency'"),
    ],
)
def test_duplicate_keys_are_refused_with_file_and_line(tmp_path, text, where):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}{where}") and "\n" not in str(info.value)


def test_yaml_merge_keys_still_override():
    from pixart_batch.parsing import load_yaml

    assert load_yaml("base: &b {seed: 1, images_per_prompt: 2}\ngeneration:\n  <<: *b\n  seed: 3\n")[
        "generation"
    ] == {
        "seed": 3,
        "images_per_prompt": 2,
    }


def test_json_duplicate_keys_name_their_lines():
    from pixart_batch.parsing import DuplicateKeyError, loads_json

    assert loads_json('{"a": [{"b": 1}, {"b": 2}], "c": {"a": 1}}') == {
        "a": [{"b": 1}, {"b": 2}],
        "c": {"a": 1},
    }
    text = '{\n  "a": {"x": "\\"x\\"", \n   "x": 2},\n  "b": 1,\n  "b": 2\n}'
    with pytest.raises(DuplicateKeyError) as info:
        loads_json(text)
    assert info.value.describe("f.json") == "f.json:3: duplicate key 'x' (first on line 2)"
    deep = '{"a": ' * 3000 + '{"k": 1, "k": 2}' + "}" * 3000
    with pytest.raises((DuplicateKeyError, RecursionError)):
        loads_json(deep)


# --------------------------------------------------------------------------- ranges of numbers


def test_every_numeric_field_has_a_range_and_the_readme_lists_them():
    """A new int/float field without a range in config_ranges.RANGES fails here (and at load)."""
    from pathlib import Path

    from pixart_batch.config_ranges import RANGES, numeric_fields, range_of, reference

    fields = numeric_fields(RunConfig)
    assert (
        "ray.no_progress_timeout_s" in fields
        and "stages.denoise.concurrency" in fields
        and "generation.timesteps" in fields
    )
    assert [name for name in fields if range_of(name) is None] == []
    used = {name for name in RANGES if any(range_of(field) is RANGES[name] for field in fields)}
    assert used == set(RANGES), "RANGES names fields that do not exist"
    for name in fields:  # every default is in its range
        value = get_dotted(RunConfig(), name)
        for number in value if isinstance(value, list) else [value]:
            assert number is None or range_of(name).contains(number), name  # type: ignore[union-attr]
    readme = Path("README.md").read_text()
    assert all(line in readme for line in reference()), "README's config reference lists every range"


def test_a_numeric_field_without_a_range_is_caught():
    import dataclasses

    from pixart_batch.config import RayConfig
    from pixart_batch.config_ranges import check_ranges

    Extended = dataclasses.make_dataclass(
        "Extended", [("retries", int, dataclasses.field(default=3))], bases=(RayConfig,), frozen=True
    )
    Config = dataclasses.make_dataclass(
        "Config", [("ray", Extended, dataclasses.field(default_factory=Extended))]
    )
    with pytest.raises(TypeError, match="ray.retries has no range"):
        check_ranges(Config())


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "ray: {no_progress_timeout_s: -1}",
            "ray.no_progress_timeout_s: -1 is out of range (must be a finite number > 0)",
        ),
        (
            "ray: {no_progress_timeout_s: 0}",
            "ray.no_progress_timeout_s: 0 is out of range (must be a finite number > 0)",
        ),
        (
            "ray: {no_progress_timeout_s: .inf}",
            "ray.no_progress_timeout_s: inf is out of range (must be a finite number > 0)",
        ),
        ("ray: {num_cpus: 0}", "ray.num_cpus: 0 is out of range (must be >= 1)"),
        (
            "stages: {encode: {num_gpus: .nan}}",
            "stages.encode.num_gpus: nan is out of range (must be a finite number >= 0)",
        ),
        ("stages: {write: {batch_size: 0}}", "stages.write.batch_size: 0 is out of range (must be >= 1)"),
        (
            "stages: {denoise: {concurrency: [0, 2]}}",
            "stages.denoise.concurrency: [0, 2] is out of range (each must be >= 1)",
        ),
        (
            "failures: {max_rate: 1.5}",
            "failures.max_rate: 1.5 is out of range (must be a finite number in (0, 1])",
        ),
        (
            "failures: {max_rate: 0}",
            "failures.max_rate: 0 is out of range (must be a finite number in (0, 1])",
        ),
        ("generation: {seed: -1}", "generation.seed: -1 is out of range (must be in [0, 2**63))"),
        (
            "generation: {images_per_prompt: 100000}",
            "generation.images_per_prompt: 100000 is out of range (must be in 1..99999)",
        ),
        ("model: {tiny_seed: -2}", "model.tiny_seed: -2 is out of range (must be in [0, 2**63))"),
        ("output: {image_quality: 0}", "output.image_quality: 0 is out of range (must be in 1..100)"),
        (
            "console: {progress_interval_s: -5}",
            "console.progress_interval_s: -5 is out of range (must be a finite number > 0)",
        ),
    ],
)
def test_numbers_out_of_range_are_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {message}"


def test_ranges_hold_for_overrides_and_direct_construction():
    from pixart_batch.config import RayConfig

    with pytest.raises(
        ConfigError, match=r"^generation.num_inference_steps: 0 is out of range \(must be >= 1\)$"
    ):
        with_overrides(RunConfig(), {"generation.num_inference_steps": 0})
    with pytest.raises(ConfigError, match=r"^ray.local_max_images: -1 is out of range"):
        RunConfig(ray=RayConfig(local_max_images=-1))
    assert with_overrides(RunConfig(), {"ray.local_max_images": 0}).ray.local_max_images == 0
