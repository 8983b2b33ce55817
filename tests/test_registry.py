"""The one registry mechanism (:class:`pixart_batch.registry.Registry`) behind the executors, the model
stages and the output formats: one-line errors naming the choices, register / unregister, lazy entries
imported only when loaded."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pixart_batch.executors.registry import EXECUTORS
from pixart_batch.output.formats import FORMATS, ParquetFormat, register_format
from pixart_batch.registry import Registry
from pixart_batch.stages import STAGES, stage_class


def test_unknown_names_raise_one_line_naming_the_choices():
    with pytest.raises(KeyError) as executor:
        EXECUTORS.load("x")
    assert executor.value.args[0] == "unknown executor 'x'; the executors are ray, local"
    with pytest.raises(KeyError) as stage:
        stage_class("x")
    assert stage.value.args[0] == "unknown stage 'x'; the stages are encode, denoise, decode, generate, score"
    with pytest.raises(KeyError) as output_format:
        FORMATS["x"]
    assert output_format.value.args[0].startswith("unknown output format 'x'; the output formats are parquet")
    assert "\n" not in output_format.value.args[0]


def test_names_in_order_and_a_live_view():
    registry: Registry[int] = Registry("number", {"one": 1, "two": 2})
    names = registry.keys()
    assert list(registry) == list(names) == ["one", "two"] and "one" in registry and "three" not in registry
    unregister = registry.register("three", 3)
    assert list(names) == ["one", "two", "three"] and registry["three"] == registry.load("three") == 3
    assert list(registry.values()) == [1, 2, 3] and registry.get("four") is None
    with pytest.raises(ValueError, match="number 'three' is registered already"):
        registry.register("three", 33)
    unregister()
    assert "three" not in registry and list(names) == ["one", "two"]
    registry.register("three", 33)
    unregister()  # removes only the entry it added
    assert registry["three"] == 33


def test_lazy_entries_are_imported_on_first_load(tmp_path, monkeypatch):
    (tmp_path / "lazy_registry_probe.py").write_text("VALUE = object()\nLOADS = []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lazy_registry_probe", raising=False)
    registry: Registry[object] = Registry("probe")
    unregister = registry.register("p", "lazy_registry_probe:VALUE")
    assert "p" in registry and list(registry) == ["p"] and not registry.is_loaded("p")
    assert "lazy_registry_probe" not in sys.modules  # named, listed, not imported
    value = registry.load("p")
    assert value is sys.modules["lazy_registry_probe"].VALUE and registry.is_loaded("p")
    assert registry.load("p") is value
    unregister()
    assert "p" not in registry
    with pytest.raises(ValueError, match="module:attr"):
        Registry("probe", {"bad": "no_colon"}).load("bad")


def test_the_registries_name_without_importing():
    """The config lists the executors and the stages are named without importing Ray or torch."""
    code = textwrap.dedent(
        """
        import sys
        import pixart_batch.config as config
        from pixart_batch.executors.registry import EXECUTORS
        from pixart_batch.stages import STAGES
        assert list(config.EXECUTORS) == ["auto", "ray", "local"], config.EXECUTORS
        assert list(STAGES) == ["encode", "denoise", "decode", "generate", "score"]
        assert "ray" not in sys.modules and "torch" not in sys.modules
        assert "pixart_batch.executors.ray" not in sys.modules
        assert "pixart_batch.stages.denoise" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_loading_gives_the_classes():
    from pixart_batch.executors.local import LocalExecutor
    from pixart_batch.stages.encode import TextEncoder

    assert EXECUTORS.load("local") is LocalExecutor
    assert STAGES.load("encode") is stage_class("encode") is TextEncoder
    assert FORMATS["parquet"] is ParquetFormat


def test_register_format_keeps_its_checks():
    with pytest.raises(ValueError, match="output format 'parquet' is registered already"):
        register_format("parquet", ParquetFormat)
    with pytest.raises(ValueError, match="its class ParquetFormat is named 'parquet'"):
        register_format("other", ParquetFormat)
    assert list(FORMATS) == ["parquet", "webdataset"]
