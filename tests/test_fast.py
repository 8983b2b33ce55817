"""The exact fast path (torch.compile, one tokenisation, sorted T5 sub-batches) and the opt-in fast
modes (step caching, fp8) — stages without Ray, on the tiny checkpoint."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers import hold_a_shard

from pixart_batch import schema as S
from pixart_batch.config import (
    ConfigError,
    DenoiseStageConfig,
    GenerationConfig,
    ModelConfig,
    RunConfig,
    StagesConfig,
)
from pixart_batch.errors import OutputError, UserError
from pixart_batch.spec import RunSpec
from pixart_batch.tensors import tensor_to_bytes

PROMPTS = [
    "a red fox in the snow",
    "a cute cat sitting on a chair, oil painting, warm light, very detailed",
    "x",
]
BUCKET = (256, 256)


def _spec(tiny_model, steps: int = 6, **denoise) -> RunSpec:
    stages = StagesConfig(denoise=DenoiseStageConfig(batch_size=3, **denoise))
    return RunSpec.build(
        RunConfig(
            model=ModelConfig(path=str(tiny_model)),
            generation=GenerationConfig(num_inference_steps=steps),
            stages=stages,
        )
    )


@pytest.fixture(scope="module")
def embedded(tiny_model):
    """Stored embeddings (valid tokens only) of PROMPTS and the empty negative prompt."""
    from pixart_batch.stages.encode import TextEncoder

    hidden, counts, _ = TextEncoder(_spec(tiny_model).encode_spec()).encode([*PROMPTS, ""])
    return [tensor_to_bytes(hidden[i, :c]) for i, c in enumerate(counts)], counts


def _rows(embedded, indices: list[int], seeds: list[int]) -> dict[str, list]:
    blobs, counts = embedded
    n = len(indices)
    return {
        S.NUM_TOKENS: [counts[i] for i in indices],
        S.PROMPT_EMBEDDING: [blobs[i] for i in indices],
        S.NEGATIVE_NUM_TOKENS: [counts[-1]] * n,
        S.NEGATIVE_EMBEDDING: [blobs[-1]] * n,
        S.SEED: seeds,
    }


def _pixels(spec: RunSpec, latents: torch.Tensor) -> np.ndarray:
    from pixart_batch.stages.decode import Decoder

    return Decoder(spec.decode_spec()).decode(latents, *BUCKET)


def _max_delta(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="module")
def exact(tiny_model, embedded):
    from pixart_batch.stages.denoise import Denoiser

    spec = _spec(tiny_model)
    return spec, Denoiser(spec.denoise_spec()).denoise(_rows(embedded, [0, 1, 2], [1, 2, 3]), *BUCKET)


# --------------------------------------------------------------------------- torch.compile (exact mode)


def test_compiled_dit_makes_the_eager_images_and_compiles_a_bucket_once(
    tiny_model, embedded, exact, monkeypatch, tmp_path
):
    from pixart_batch.stages.denoise import Denoiser

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    spec, eager = exact
    torch._dynamo.reset()
    denoiser = Denoiser(dataclasses.replace(spec.denoise_spec(), compile=True))
    assert denoiser.compiled
    first = denoiser.denoise(_rows(embedded, [0, 1], [1, 2]), *BUCKET)  # 2 rows padded to 3, text to 120
    try:
        torch.compiler.set_stance("fail_on_recompile")  # another size and other prompt lengths: no recompile
        second = denoiser.denoise(_rows(embedded, [2], [3]), *BUCKET)
        third = denoiser.denoise(
            _rows(embedded, [2, 0, 1, 2], [3, 1, 2, 3]), *BUCKET
        )  # more than a batch: two calls
    finally:
        torch.compiler.set_stance("default")
    compiled = torch.cat([first, second])
    assert compiled.shape == eager.shape
    # Latents of the random tiny DiT are O(100); the compiled kernels differ from eager by rounding only.
    torch.testing.assert_close(compiled, eager, atol=0.05, rtol=1e-3)
    torch.testing.assert_close(third, torch.cat([second, first, second]), atol=0.05, rtol=1e-3)
    assert _max_delta(_pixels(spec, compiled), _pixels(spec, eager)) <= 2
    assert any((tmp_path / "inductor").iterdir())  # the user's TORCHINDUCTOR_CACHE_DIR is kept and filled


def test_inductor_cache_lives_in_the_project_cache(monkeypatch, tmp_path):
    from pixart_batch.fast import inductor_cache_dir

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("PIXART_BATCH_CACHE", str(tmp_path))
    assert inductor_cache_dir() == str(tmp_path / "inductor")
    assert torch._inductor.config.fx_graph_cache


def test_no_compiler_falls_back_to_eager_with_one_line(tiny_model, monkeypatch):
    from pixart_batch import fast
    from pixart_batch.stages.denoise import Denoiser

    lines = []
    monkeypatch.setattr(fast.log, "warning", lambda message, *args: lines.append(message % args))
    monkeypatch.setattr(fast, "compiler_missing", lambda device: "no C++ compiler")
    denoiser = Denoiser(dataclasses.replace(_spec(tiny_model).denoise_spec(), compile=True))
    assert not denoiser.compiled
    assert len(lines) == 1 and "no C++ compiler" in lines[0] and "without torch.compile" in lines[0]


# --------------------------------------------------------------------------- step caching (fast mode)


@pytest.mark.parametrize(
    "mode",
    [
        {
            "step_cache": "first-block",
            "step_cache_threshold": 1.0,
        },  # the random tiny DiT changes a lot per step
        {"step_cache": "pab", "step_cache_interval": 3},
        {"step_cache": "taylorseer", "step_cache_interval": 2},
    ],
)
def test_step_cache_modes_approximate_exact(tiny_model, embedded, exact, mode):
    from pixart_batch.stages.denoise import Denoiser

    spec, eager = exact
    cached = _spec(tiny_model, **mode)
    denoiser = Denoiser(cached.denoise_spec())
    rows = _rows(embedded, [0, 1, 2], [1, 2, 3])
    latents = denoiser.denoise(rows, *BUCKET)
    denoiser.denoise(_rows(embedded, [1], [7]), *BUCKET)  # another batch between: state is reset per call
    assert torch.equal(denoiser.denoise(rows, *BUCKET), latents)
    assert not torch.equal(latents, eager)  # steps were skipped
    psnr = _psnr(_pixels(cached, latents), _pixels(spec, eager))
    assert psnr > 25, psnr  # close to exact (another seed is ~9 dB away)


def test_fast_modes_enter_the_settings_guard_and_every_row(tiny_model, tmp_path):
    from pixart_batch.output import OutputDataset
    from pixart_batch.output.guard import check_settings
    from pixart_batch.output.layout import SETTINGS_FILE
    from pixart_batch.output.writers import to_table

    exact = _spec(tiny_model)
    cached = _spec(tiny_model, step_cache="pab")
    assert exact.row_constants()[S.FAST_MODE] == "exact"
    assert cached.row_constants()[S.FAST_MODE] == "pab(interval=2)"
    output = OutputDataset(str(tmp_path / "out"))
    output.write_json(SETTINGS_FILE, exact.settings())
    assert "holds no images yet" in (
        check_settings(output, cached.settings()) or ""
    )  # nothing to protect yet
    hold_a_shard(tmp_path / "out")
    with pytest.raises(OutputError, match="setting 'stages.denoise.step_cache' is \"pab\"") as info:
        check_settings(output, cached.settings())
    assert "\n" not in str(info.value)
    check_settings(
        output, _spec(tiny_model, step_cache_threshold=0.5).settings()
    )  # unused by exact mode: no change
    check_settings(output, _spec(tiny_model, compile=True).settings())  # exact mode
    batch = {
        S.KEY: np.array(["k"], dtype=object),
        "image_bytes": np.array([b"x"], dtype=object),
        **{
            c: np.array([0])
            for c in S.OUTPUT_COLUMNS
            if c not in (S.KEY, S.IMAGE) and c not in cached.row_constants()
        },
    }
    for column in (
        S.PROMPT_ID,
        S.PROMPT,
        S.CAPTION,
        S.NEGATIVE_PROMPT,
        S.NEGATIVE_CAPTION,
        S.SCHEDULER,
        S.SHA256,
    ):
        batch[column] = np.array(["s"], dtype=object)
    batch[S.TRUNCATED] = np.array([False])
    table = to_table(batch, cached.row_constants(), cached.settings())
    assert table.column(S.FAST_MODE).to_pylist() == ["pab(interval=2)"]


def test_fast_mode_names():
    assert DenoiseStageConfig(step_cache="first-block", step_cache_threshold=0.1, fp8=True).fast_mode == (
        "first-block(threshold=0.1)+fp8"
    )
    assert (
        DenoiseStageConfig(step_cache="taylorseer", step_cache_interval=4).fast_mode
        == "taylorseer(interval=4)"
    )


# --------------------------------------------------------------------------- fp8 and config checks


def test_fp8_without_a_capable_gpu_is_refused_in_one_line(monkeypatch):
    from pixart_batch.fast import check_fast_modes

    config = RunConfig(stages=StagesConfig(denoise=DenoiseStageConfig(fp8=True)))
    with pytest.raises(UserError, match="stages.denoise.fp8: float8 runs on CUDA") as info:
        check_fast_modes(config)
    assert "\n" not in str(info.value)
    check_fast_modes(RunConfig())  # exact mode: nothing to check
    gpu = RunConfig(stages=StagesConfig(denoise=DenoiseStageConfig(fp8=True, num_gpus=1)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100")
    with pytest.raises(UserError, match=r"A100 has compute capability 8.0; float8 needs >= 8.9") as info:
        check_fast_modes(gpu)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "step_cache: teacache",
            "stages.denoise.step_cache: must be one of none, first-block, pab, taylorseer",
        ),
        (
            "step_cache_threshold: 0",
            "stages.denoise.step_cache_threshold: 0 is out of range (must be a finite number > 0)",
        ),
        ("step_cache_interval: 0", "stages.denoise.step_cache_interval: 0 is out of range (must be >= 1)"),
        ("compile: 1", "stages.denoise.compile': expected bool"),
        ("fp8: yes please", "stages.denoise.fp8': expected bool"),
    ],
)
def test_bad_fast_mode_values_are_refused_in_one_line(tmp_path, text, message):
    from pixart_batch.config import load_config

    path = tmp_path / "bad.yaml"
    path.write_text(f"stages:\n  denoise:\n    {text}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------- T5: one tokenisation, sorted sub-batches


def test_t5_tokenises_once_and_sub_batches_change_no_embedding(tiny_model, monkeypatch):
    from pixart_batch.stages import encode
    from pixart_batch.stages.encode import TextEncoder, sub_batches

    captions = ["", "x", "a cute cat " * 60, *[f"prompt {i} " + "a red cat " * (i % 30) for i in range(20)]]
    encoder = TextEncoder(_spec(tiny_model).encode_spec())
    calls: list[int] = []
    tokenizer = encoder.tokenizer

    class Counting:
        """The tokenizer, counting its calls."""

        pad = tokenizer.pad

        def __call__(self, *a, **k):
            calls.append(1)
            return tokenizer(*a, **k)

    monkeypatch.setattr(encoder, "tokenizer", Counting())
    monkeypatch.setattr(encode, "CALL_COST_TOKENS", 8)  # cut into several sub-batches
    hidden, counts, truncated = encoder.encode(captions)
    assert len(calls) == 1
    assert len(sub_batches(counts, 8)) > 1
    # The former way: padding to the longest of the whole batch, a second pass for the full lengths.
    tokens = tokenizer(captions, padding="longest", max_length=120, truncation=True, return_tensors="pt")
    full = [len(ids) for ids in tokenizer(captions).input_ids]
    assert counts == tokens.attention_mask.sum(dim=1).tolist() and truncated == [n > 120 for n in full]
    assert truncated[2] and sum(truncated) == 1
    reference = encoder.text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
    for row, count in enumerate(counts):
        torch.testing.assert_close(hidden[row, :count], reference[row, :count], atol=1e-5, rtol=1e-5)


def test_sub_batches_cover_every_row_once_in_length_order():
    from pixart_batch.stages.encode import sub_batches

    counts = [5, 120, 7, 118, 6, 119, 30] * 5
    groups = sub_batches(counts, 64)
    assert sorted(i for g in groups for i in g) == list(range(len(counts))) and len(groups) > 1
    assert all(
        max(counts[i] for i in a) <= min(counts[i] for i in b)
        for a, b in zip(groups, groups[1:], strict=False)
    )
    assert sub_batches([10] * 32) == [list(range(32))]  # nothing to save: one call


@pytest.mark.slow
def test_a_run_with_a_step_cache_records_it_in_every_row(tmp_path, ray_session, tiny_model):
    import pyarrow.parquet as pq
    from helpers import tiny_config

    from pixart_batch.run import run_generate

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na cute cat on a chair\n")
    config = tiny_config(**{"generation.num_inference_steps": 4, "stages.denoise.step_cache": "taylorseer"})
    run_generate(config, str(prompts), str(tmp_path / "out"))
    rows = pq.read_table(tmp_path / "out" / "data", columns=[S.KEY, S.FAST_MODE]).to_pylist()
    assert len(rows) == 2 and {row[S.FAST_MODE] for row in rows} == {"taylorseer(interval=2)"}


def test_an_output_made_before_a_setting_existed_resumes_at_its_default(tmp_path):
    """settings.json written before ``stages.denoise.step_cache`` existed: the default is what made its
    images, so a run at the default resumes it; a run with a step cache is refused."""
    import json

    import pytest

    from pixart_batch.errors import OutputError
    from pixart_batch.output import OutputDataset
    from pixart_batch.output.guard import check_settings

    now = {"generation.seed": 0, "stages.denoise.step_cache": "none", "stages.denoise.fp8": False}
    old = {"generation.seed": 0}
    (tmp_path / "settings.json").write_text(json.dumps(old))
    hold_a_shard(tmp_path)
    output = OutputDataset(str(tmp_path))
    check_settings(output, now)
    with pytest.raises(OutputError, match="setting 'stages.denoise.step_cache' is \"pab\""):
        check_settings(output, {**now, "stages.denoise.step_cache": "pab"})
    with pytest.raises(OutputError, match="setting 'generation.seed'"):
        check_settings(output, {**now, "generation.seed": 1})
