"""The real PixArt-XL-2 / T5-XXL configurations, the --small ones, and the design's numbers."""

from __future__ import annotations

from dataclasses import dataclass

# Real configurations (the hub checkpoints' config.json). Keys a diffusers version does not accept
# are dropped (and listed) when the module is built, as from_pretrained does.
TRANSFORMER_XL2 = dict(
    num_attention_heads=16,
    attention_head_dim=72,
    in_channels=4,
    out_channels=8,
    num_layers=28,
    cross_attention_dim=1152,
    patch_size=2,
    caption_channels=4096,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000,
    attention_bias=True,
    dropout=0.0,
    upcast_attention=False,
    use_linear_projection=False,
    only_cross_attention=False,
    double_self_attention=False,
)
VAE_SD = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
T5_XXL = dict(
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    is_encoder_decoder=False,
    use_cache=False,
)
SCHEDULER = dict(
    algorithm_type="dpmsolver++",
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="linear",
    num_train_timesteps=1000,
    prediction_type="epsilon",
    solver_order=2,
    solver_type="midpoint",
    lower_order_final=True,
    timestep_spacing="linspace",
)


def sigma_transformer_config(transformer: dict) -> dict:
    """PixArt-Σ-XL-2-1024-MS's transformer: α's, without the micro-conditions (resolution, aspect ratio)."""
    return dict(transformer, use_additional_conditions=False)


def sigma_vae_config(vae: dict) -> dict:
    """The SDXL VAE PixArt-Σ ships: SD's architecture, scaling 0.13025, 1024-pixel tiles, force_upcast."""
    return dict(vae, scaling_factor=0.13025, force_upcast=True, sample_size=2 * vae["sample_size"])


@dataclass(frozen=True)
class Spec:
    """Everything that --small shrinks."""

    transformer: dict
    vae: dict
    t5: dict
    sizes: dict
    """label -> (transformer sample_size, the parity rows' buckets (height, width))."""
    e2e_t5: dict
    """The text encoder of the end-to-end checkpoint (d_model = the DiT's caption_channels)."""
    steps: int = 20
    guidance: float = 4.5
    max_tokens: int = 120
    prompt_lengths: tuple = (7, 33, 20, 120)
    throughput_images: int = 16
    warmup_images: int = 2
    batch_size: int = 8
    t5_batch: int = 64
    t5_lengths: tuple = (120, 32)
    component_batches: tuple = (1, 4, 8)
    e2e_timeout_s: int = 180
    sigma_max_tokens: int = 300
    sigma_prompt_lengths: tuple = (7, 33, 20, 300)
    lowvram_t5_prompts: int = 32
    lowvram_vae_latents: tuple = (128, 256)
    """Latent sides of the tiled / untiled decodes (1024² and 2048²); the first also for slicing."""
    lowvram_slicing_batch: int = 4


FULL = Spec(
    transformer=TRANSFORMER_XL2,
    vae=VAE_SD,
    t5=T5_XXL,
    sizes={
        "1024": (128, [(1024, 1024), (1024, 1024), (768, 1344), (768, 1344)]),
        "512": (64, [(512, 512), (512, 512), (384, 672), (384, 672)]),
    },
    e2e_t5=dict(T5_XXL, num_layers=2, num_heads=8, d_kv=64, d_ff=1024),
)
SMALL = Spec(
    transformer=dict(
        TRANSFORMER_XL2,
        num_attention_heads=2,
        attention_head_dim=32,
        num_layers=2,
        cross_attention_dim=64,
        caption_channels=64,
    ),
    vae=dict(
        VAE_SD, block_out_channels=(32, 32, 32, 32), layers_per_block=1, norm_num_groups=8, sample_size=256
    ),
    t5=dict(T5_XXL, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
    sizes={
        "256": (32, [(256, 256), (256, 256), (192, 336), (192, 336)]),
        "128": (16, [(128, 128), (128, 128), (96, 160), (96, 160)]),
    },
    e2e_t5=dict(T5_XXL, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
    steps=2,
    throughput_images=2,
    warmup_images=1,
    batch_size=2,
    t5_batch=8,
    component_batches=(1, 2),
    e2e_timeout_s=600,
    lowvram_vae_latents=(48, 96),  # larger than the small VAE's 32-latent tile, so tiling does tile
)

# The design's H200 numbers (docs/design.md), for the comparison column.
DESIGN = {
    "pipe_s_per_image": "0.80–0.84",
    "dit_step_bf16_s_per_image": "0.034",
    "vae_decode_s_per_image": "0.07–0.08",
    "t5_prompts_per_s_120": "327",
    "t5_prompts_per_s_32": "1237",
}
