"""Typed run configuration: one frozen dataclass per component, loaded from YAML.

Unknown keys are rejected with their dotted name (a typo must never silently become
a default), a key given twice with its line, a number outside its range with its dotted name and the
range. Every leaf field is a :func:`~pixart_batch.config_fields.setting` that carries its own facts —
role, range, CLI flag, help — from which the tables (:mod:`.config_tables`) and the README's config
reference (:mod:`.config_reference`) are derived. CLI flags override fields after loading
(:func:`with_overrides`). The resolved config is written next to the outputs (``OUTPUT/run_config.json``).
The ``stages:`` section lives in :mod:`.config_stages` (its names are re-exported here).
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Any

from .config_fields import check_ranges
from .config_sections import (
    EXECUTORS,
    IMAGE_FORMATS,
    OUTPUT_FORMATS,
    TINY_MODEL,
    ConsoleConfig,
    EstimateConfig,
    FailuresConfig,
    GenerationConfig,
    ModelConfig,
    OutputConfig,
    RayConfig,
)
from .config_stages import (
    DTYPES,
    QUANTIZATIONS,
    STEP_CACHE_PARAMETERS,
    STEP_CACHES,
    DecodeStageConfig,
    DenoiseStageConfig,
    EncodeStageConfig,
    ScoreStageConfig,
    StageConfig,
    StagesConfig,
)
from .errors import ConfigError
from .parsing import DuplicateKeyError, load_yaml

__all__ = [  # the sections' modules' names too: `from pixart_batch.config import X` for every config name
    "DTYPES",
    "EXECUTORS",
    "IMAGE_FORMATS",
    "OUTPUT_FORMATS",
    "QUANTIZATIONS",
    "STEP_CACHES",
    "STEP_CACHE_PARAMETERS",
    "TINY_MODEL",
    "ConfigError",
    "ConsoleConfig",
    "DecodeStageConfig",
    "DenoiseStageConfig",
    "EncodeStageConfig",
    "EstimateConfig",
    "FailuresConfig",
    "GenerationConfig",
    "ModelConfig",
    "OutputConfig",
    "RayConfig",
    "RunConfig",
    "ScoreStageConfig",
    "StageConfig",
    "StagesConfig",
    "config_json",
    "get_dotted",
    "load_config",
    "set_dotted",
    "with_overrides",
]


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    failures: FailuresConfig = field(default_factory=FailuresConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)

    def __post_init__(self) -> None:
        check_ranges(self)  # every number of every section, against its field's range

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, data: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, rejecting unknown keys by dotted name."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key '{name}' (known: {', '.join(fields)})")
        hint = hints[key]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, name)
        else:
            kwargs[key] = _check_type(value, hint, name)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        message = str(exc)
        if where and not message.startswith(where):
            message = f"{where}.{message}"
        raise ConfigError(message) from None


def _check_type(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    options = (
        typing.get_args(hint)
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None))
        else (hint,)
    )
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is bool and isinstance(value, bool):
            return value
        if option is str and isinstance(value, str):
            return value
        if (
            typing.get_origin(option) is list
            and isinstance(value, list)
            and all(isinstance(v, int) for v in value)
        ):
            return list(value)
    raise ConfigError(f"config key '{name}': expected {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def load_config(path: str | os.PathLike | None) -> RunConfig:
    """Load a YAML recipe (None = all defaults)."""
    if path is None:
        return RunConfig()
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = load_yaml(handle)
    except DuplicateKeyError as exc:
        raise ConfigError(exc.describe(str(path))) from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    try:
        return _build(RunConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def with_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return ``config`` with dotted-key overrides (``{"generation.seed": 3}``); None values are skipped."""
    data = config.to_dict()
    for dotted, value in overrides.items():
        if value is not None:
            set_dotted(data, dotted, value)
    return _build(RunConfig, data, "")


def get_dotted(node: Any, dotted: str) -> Any:
    """The value at a dotted key (``generation.seed``) of a config dataclass or of its dict form."""
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set a dotted key (``generation.seed``) in a config's dict form (nested mappings)."""
    parent, _, leaf = dotted.rpartition(".")
    node = get_dotted(data, parent) if parent else data
    node[leaf] = value


def config_json(config: RunConfig) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)
