"""The checkpoint's weights checked before a run writes anything, without loading them.

A run loads the DiT, the VAE and T5 inside its actors, after the output's settings and store already
exist and (for T5) minutes in: a weight file that is garbage or cut short, or a config that does not fit
its weights, would fail there. Here each of them is compared with the model its config builds on
PyTorch's ``meta`` device (no memory, no time): the safetensors headers (names, shapes, sizes) only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError, first_line

if TYPE_CHECKING:
    from .models import ResolvedModel

WEIGHT_FILES = {"diffusers": "diffusion_pytorch_model.safetensors", "transformers": "model.safetensors"}
"""The file ``from_pretrained(use_safetensors=True)`` loads, per library (``<name>.index.json`` when
sharded)."""
MODEL_COMPONENTS = ("transformer", "vae", "text_encoder")


def check_weights(model: ResolvedModel) -> None:
    """Refuse (one line naming the file) weights that cannot load into the model their config describes."""
    for component in MODEL_COMPONENTS:
        folder = model.checkpoint_of(component).local_dir / component
        library, _ = model.source.class_of(component)
        found = {
            _current_name(name): entry
            for name, entry in _header_shapes(folder, WEIGHT_FILES[library]).items()
        }
        _compare(folder, component, found, *_expected_shapes(model, component, folder))


def check_clip_weights(folder: Path) -> None:
    """Refuse a CLIP folder (the score model) whose ``model.safetensors`` — the file ``transformers``
    loads — is missing, unreadable, cut short, or does not fit the model its ``config.json`` builds."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    found = _header_shapes(folder, WEIGHT_FILES["transformers"])
    try:
        with torch.device("meta"):
            module = CLIPModel(CLIPConfig.from_pretrained(folder))
    except Exception as exc:  # a config the class cannot be built from
        raise CheckpointError(
            f"{folder / 'config.json'}: cannot build the CLIP model ({first_line(exc, with_type=True)})"
        ) from None
    _compare(folder, "CLIP model", found, *_module_shapes(module))


def _compare(
    folder: Path,
    what: str,
    found: dict[str, tuple[Path, tuple[int, ...]]],
    expected: dict[str, tuple[int, ...]],
    tied: list[list[str]],
) -> None:
    """Refuse weights whose headers do not fit the ``expected`` parameter shapes (``tied``: names sharing
    a tensor)."""
    common = set(found) & set(expected)
    if not common:
        raise CheckpointError(
            f"{folder}: its weights fit none of the {what}'s parameters; not this model's weights"
        )
    for name in sorted(common):
        if _squeezed(found[name][1]) != _squeezed(expected[name]):
            raise CheckpointError(
                f"{found[name][0]}: weight {name} has shape {list(found[name][1])} "
                f"but {folder / 'config.json'} makes it {list(expected[name])}; "
                "the config does not match the weights"
            )
    missing = sorted(names[0] for names in tied if not set(names) & set(found))
    if missing:
        shown = ", ".join(missing[:3]) + (f", ... ({len(missing)} in all)" if len(missing) > 3 else "")
        raise CheckpointError(
            f"{folder}: its weights lack {shown}, which {folder / 'config.json'} makes; "
            "the config does not match the weights"
        )


DEPRECATED_NAMES = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}
"""Attention weights of VAEs saved before diffusers renamed them; diffusers converts them as it loads."""


def _current_name(name: str) -> str:
    for old, new in DEPRECATED_NAMES.items():
        name = name.replace(old, new)
    return name


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Without trailing 1s: a deprecated 1×1 convolution's weight is loaded as the linear layer's."""
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return tuple(shape)


def _header_shapes(folder: Path, name: str) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """``{tensor: (file, shape)}`` from the headers of the weight file(s) the loader reads."""
    from safetensors import safe_open

    index = folder / f"{name}.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted({folder / shard for shard in weight_map.values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"{index}: unreadable shard index ({first_line(exc, with_type=True)})"
            ) from None
    elif (folder / name).is_file():
        files = [folder / name]
    else:
        present = ", ".join(sorted(p.name for p in folder.glob("*.safetensors"))) or "none"
        raise CheckpointError(
            f"{folder}: no {name} (safetensors found: {present}); the loader reads that file"
        )
    shapes = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    shapes[key] = (path, tuple(handle.get_slice(key).get_shape()))
        except Exception as exc:  # safetensors raises its own error types, and OSError for a missing shard
            raise CheckpointError(
                f"{path}: not a readable safetensors file ({first_line(exc, with_type=True)})"
            ) from None
        _check_length(path)
    return shapes


def _check_length(path: Path) -> None:
    """Refuse a file cut short: its header says where the last tensor ends."""
    import struct

    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if path.stat().st_size < 8 + length + end:
        raise CheckpointError(
            f"{path}: cut short ({path.stat().st_size} bytes, its header needs {8 + length + end})"
        )


def _expected_shapes(
    model: ResolvedModel, component: str, folder: Path
) -> tuple[dict[str, tuple[int, ...]], list[list[str]]]:
    """The parameter shapes of the model ``folder``'s config builds (on the meta device: nothing allocated),
    and its parameters as groups of names that share one tensor (tied weights: one of them is saved)."""
    import torch

    from .models import component_type

    cls = component_type(model.source, component)
    library, _ = model.source.class_of(component)
    try:
        with torch.device("meta"):
            if library == "diffusers":
                module = cls.from_config(cls.load_config(folder))  # type: ignore[attr-defined]
            else:
                from transformers import AutoConfig

                module = cls(AutoConfig.from_pretrained(folder))  # type: ignore[call-arg]
    except Exception as exc:  # a config the class cannot be built from
        raise CheckpointError(
            f"{folder / 'config.json'}: cannot build the {component} ({first_line(exc, with_type=True)})"
        ) from None
    return _module_shapes(module)


def _module_shapes(module: Any) -> tuple[dict[str, tuple[int, ...]], list[list[str]]]:
    """A module's parameter shapes, and its parameters as groups of names sharing one tensor."""
    state = module.state_dict(keep_vars=True)
    groups: dict[int, list[str]] = {}
    for name, tensor in state.items():
        groups.setdefault(id(tensor), []).append(name)
    return {name: tuple(tensor.shape) for name, tensor in state.items()}, list(groups.values())
