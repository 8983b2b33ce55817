"""The dataset card (``README.md``, a ``huggingface_hub.DatasetCard``) and its sample grid."""

from __future__ import annotations

import io
import json
from collections import Counter
from typing import Any

from .. import schema as S
from ..storage import write_bytes_atomic
from .layout import CARD_FILE, SAMPLE_GRID_FILE, OutputDataset


def _size_category(images: int) -> str:
    """The Hub's ``size_categories`` value for ``images`` rows."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    bounds += [(10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    return next((name for bound, name in bounds if images < bound), "1B<n<10B")


def bucket_counts(output: OutputDataset) -> dict[str, int]:
    """Committed images per bucket (``WIDTHxHEIGHT``) of the latest plan."""
    done = output.committed_keys()
    plan = output.read_plan([S.KEY, S.BUCKET_WIDTH, S.BUCKET_HEIGHT]).to_pydict()
    columns = (plan[S.KEY], plan[S.BUCKET_WIDTH], plan[S.BUCKET_HEIGHT])
    return dict(Counter(S.bucket_name(w, h) for key, w, h in zip(*columns, strict=True) if key in done))


def label_counts(output: OutputDataset, names: list[str]) -> dict[str, int]:
    """A labelled output's committed images per class name of the latest plan (every class listed)."""
    done = output.committed_keys()
    plan = output.read_plan([S.KEY, S.LABEL]).to_pydict()
    counts = Counter(
        names[number] for key, number in zip(plan[S.KEY], plan[S.LABEL], strict=True) if key in done
    )
    return {name: counts.get(name, 0) for name in names}


def label_feature(names: list[str]) -> dict[str, Any]:
    """The card's ``dataset_info.features`` entry of ``label``: a ``ClassLabel`` over ``names``."""
    return {
        "name": S.LABEL,
        "dtype": {"class_label": {"names": {str(number): name for number, name in enumerate(names)}}},
    }


def _labels_section(output: OutputDataset, names: list[str] | None) -> str:
    if names is None:
        return ""
    counts = label_counts(output, names)
    rows = "\n".join(f"| {number} | {name} | {counts[name]} |" for number, name in enumerate(names))
    return (
        f"## Images per label\n\n`label` is a `ClassLabel` over {len(names)} names (ids in the order below; "
        "a re-run with new classes appends them).\n\n| id | label | images |\n|---|---|---|\n"
        f"{rows}\n\n"
    )


def write_card(
    output: OutputDataset,
    settings: dict[str, Any],
    counts: dict[str, Any],
    features: list[dict[str, Any]] | None = None,
) -> None:
    """``README.md``: a Hub dataset card whose ``configs`` point at the shards, so ``load_dataset(OUTPUT)``
    and a Hub upload of the folder read them; with the generation settings, the images per bucket and
    ``sample_grid.jpg``. What it says about the shards comes from their format (``describe``); ``features``
    replaces the format's ``dataset_info.features`` entries (where it declares any)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    described = output.format.describe()
    if features is not None and described["features"]:  # rows with other columns than a run's (export)
        described["features"] = features
    buckets = bucket_counts(output)
    images = sum(buckets.values())
    grid = write_sample_grid(output, sorted(buckets, key=lambda name: (-buckets[name], name)))
    names = S.label_names(settings)
    features = list(described["features"])
    if features and S.score_columns(settings):
        features = with_score_features(features, S.score_columns(settings))
    if features and names is not None and all(entry.get("name") != S.LABEL for entry in features):
        # the label's ClassLabel before the image (the shards' order)
        features.insert(len(features) - 1, label_feature(names))
    extra: dict[str, Any] = {"dataset_info": {"features": features}} if features else {}
    data = DatasetCardData(
        pretty_name="Synthetic images generated with pixart_batch",
        task_categories=["text-to-image"],
        tags=["synthetic", "pixart", "pixart-batch", described["format"]],
        size_categories=[_size_category(images)],
        configs=[
            {"config_name": "default", "data_files": [{"split": "train", "path": described["data_files"]}]}
        ],
        **extra,
        generation=settings,
    )
    rows = "\n".join(f"| {name} | {buckets[name]} |" for name in sorted(buckets))
    loader = (
        'ds = load_dataset(OUTPUT, split="train")'
        "  # this folder (or its Hub repo): README's configs find the shards"
    )
    body = (
        "# Synthetic images generated with pixart_batch\n\n"
        f"{images} images from {counts.get('prompts', 0)} prompts "
        f"({counts.get('images_total', images)} planned), "
        f"model `{settings.get('model')}`. {described['layout']}\n\n"
        "Each row records what reproduces its image with plain diffusers: `prompt`, `negative_prompt`, "
        '`seed` (a `torch.Generator("cpu").manual_seed(seed)`), `num_inference_steps`, `guidance_scale`, '
        "and the bucket size (`bucket_height` × `bucket_width`, `use_resolution_binning=False`); "
        "`width` × `height` is the final image after diffusers' resize-and-crop.\n\n"
        f"{score_text(settings)}"
        f"```python\nfrom datasets import load_dataset\n{loader}\n```\n\n"
        "## Images per bucket\n\n| bucket (width x height) | images |\n|---|---|\n"
        f"{rows}\n\n"
        + _labels_section(output, names)
        + (f"## Samples\n\n![a few images per bucket]({grid})\n\n" if grid else "")
        + "## Generation settings\n\n"
        f"```json\n{json.dumps(settings, indent=2, sort_keys=True)}\n```\n"
    )
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    write_bytes_atomic(output.location, output.location.join(CARD_FILE), str(card).encode())


def with_score_features(features: list[dict[str, Any]], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """The card's features with the score columns (float32) before ``sha256``."""
    present = {entry.get("name") for entry in features}
    at = next((i for i, entry in enumerate(features) if entry.get("name") == S.SHA256), len(features))
    return (
        features[:at]
        + [{"name": name, "dtype": "float32"} for name in columns if name not in present]
        + features[at:]
    )


def score_text(settings: dict[str, Any]) -> str:
    """The card's paragraph on quality scores (empty when the output is not scored)."""
    score = settings.get(S.SCORE_SETTING)
    if not score:
        return ""
    head = (
        " and `aesthetic_score` (a linear head over the CLIP image embedding)"
        if score.get("aesthetic_head")
        else ""
    )
    return (
        "Every row has `clip_score` (100 × cosine similarity of the CLIP image and text embeddings of the "
        f"image and its `caption`, model `{score.get('model')}`){head}: filter with e.g. "
        '`ds.filter(lambda row: row["clip_score"] >= 28)`.\n\n'
    )


def write_sample_grid(
    output: OutputDataset, buckets: list[str], per_bucket: int = 4, most_buckets: int = 8, cell: int = 192
) -> str | None:
    """``sample_grid.jpg``: a row of up to ``per_bucket`` images for each of the first
    ``most_buckets`` buckets; reads shards only until the rows are full. Returns its name."""
    from PIL import Image, ImageDraw

    wanted = buckets[:most_buckets]
    found: dict[str, list[Image.Image]] = {name: [] for name in wanted}

    def full() -> bool:
        return all(len(blobs) == per_bucket for blobs in found.values())

    for path in output.shard_files():
        try:
            for row in output.format.read_rows(path):
                name = S.bucket_name(row[S.BUCKET_WIDTH], row[S.BUCKET_HEIGHT])
                if name in found and len(found[name]) < per_bucket:
                    thumb = _thumbnail(row[S.IMAGE], cell)
                    if thumb is not None:  # an image whose bytes do not decode: verify names it
                        found[name].append(thumb)
                if full():
                    break
        except Exception:
            continue  # a damaged shard: verify names it
        if full():
            break
    rows = [name for name in wanted if found[name]]
    if not rows:
        return None
    label = 18
    grid = Image.new("RGB", (cell * per_bucket, (cell + label) * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for y, name in enumerate(rows):
        top = y * (cell + label)
        draw.text((4, top + 3), name, fill="black")
        for x, thumb in enumerate(found[name]):
            grid.paste(
                thumb, (x * cell + (cell - thumb.width) // 2, top + label + (cell - thumb.height) // 2)
            )
    buffer = io.BytesIO()
    grid.save(buffer, format="JPEG", quality=85)
    write_bytes_atomic(output.location, output.location.join(SAMPLE_GRID_FILE), buffer.getvalue())
    return SAMPLE_GRID_FILE


def _thumbnail(image: dict[str, Any] | None, cell: int) -> Any:
    """A stored image as an RGB thumbnail of at most ``cell`` pixels (None when its bytes do not decode)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO((image or {})["bytes"])) as opened:
            thumb = opened.convert("RGB")
    except Exception:  # PIL raises many types for bad bytes
        return None
    thumb.thumbnail((cell, cell))
    return thumb
