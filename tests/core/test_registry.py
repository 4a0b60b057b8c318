from __future__ import annotations

import sys
import textwrap

import pytest

from lungseg import hookimpl
from lungseg.core.errors import PluginError, RecipeError
from lungseg.core.manager import DISABLE_AUTOLOAD_ENV, load_registry
from lungseg.core.registry import KINDS, Registry


def test_default_plugins_come_through_the_entry_point_group():
    registry = load_registry()
    assert registry.broken == {}
    expected = {
        "preprocessor": {"canonical", "skip-slices", "normalize", "resize"},
        "sampler": {"tumor-weighted", "uniform"},
        "model": {"unet"},
        "loss": {"bce"},
        "metric": {"dice", "iou"},
        "postprocessor": {"min-size", "largest-components", "inside-lungs"},
    }
    for kind in KINDS:
        assert expected[kind] <= set(registry.names(kind))
    # registered by the installed distribution's entry points, not imported directly
    assert registry.get("model", "unet").plugin == "lungseg:unet"


def test_unknown_name_lists_options_and_closest_match():
    registry = load_registry()
    with pytest.raises(
        RecipeError, match=r"model\.name: unknown model 'unte'.*did you mean 'unet'"
    ):
        registry.create("model", "unte", {}, "model")


def test_unknown_parameter_names_the_key_path():
    registry = load_registry()
    with pytest.raises(RecipeError, match=r"preprocess\[3\]\.sise: .*did you mean 'size'"):
        registry.create("preprocessor", "resize", {"sise": 3}, "preprocess[3]")


def test_bad_parameter_value_names_the_key():
    registry = load_registry()
    with pytest.raises(RecipeError, match=r"model: model 'unet' rejected.*features"):
        registry.create("model", "unet", {"features": []}, "model")


def test_duplicate_name_names_both_plugins():
    registry = Registry()
    registry.add("model", "net", lambda: None, "first-plugin")
    with pytest.raises(PluginError, match="first-plugin.*second-plugin"):
        registry.add("model", "net", lambda: None, "second-plugin")


class _ExtraModel:
    @staticmethod
    @hookimpl
    def lungseg_add_models(registry):
        registry.add("extra-net", lambda width=3: width)


def test_extra_plugin_objects_register():
    registry = load_registry(extra_plugins=(_ExtraModel,))
    assert registry.create("model", "extra-net", {"width": 5}, "model") == 5


def test_plugins_can_be_registered_alone():
    registry = load_registry(extra_plugins=(_ExtraModel,), entry_points=False)
    assert registry.names("model") == ["extra-net"]
    assert all(registry.names(kind) == [] for kind in KINDS if kind != "model")


def test_default_factories_are_light_functions_with_the_recipe_parameters():
    registry = load_registry()
    assert registry.get("model", "unet").signature() == (
        "in_channels=1, out_channels=1, features=(64, 128, 256, 512), batch_norm=True"
    )
    assert registry.get("model", "unet").description == "UNet for binary segmentation."
    assert registry.get("loss", "bce").signature() == "pos_weight=None"
    with pytest.raises(RecipeError, match=r"model\.widht: .*It takes: in_channels=1"):
        registry.check("model", "unet", {"widht": 3}, "model")


class _Clashing:
    @staticmethod
    @hookimpl
    def lungseg_add_models(registry):
        registry.add("unet", lambda: None)


def test_clash_with_a_default_plugin_is_an_error():
    with pytest.raises(PluginError, match="'unet' is registered twice.*lungseg:unet"):
        load_registry(extra_plugins=(_Clashing,))


def _install_fake_dist(site, name: str, module_source: str) -> None:
    """A real installed distribution (dist-info with an entry point) on sys.path."""
    (site / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[lungseg]\n{name} = {name}\n")


def test_third_party_entry_point_is_discovered_and_can_be_disabled(tmp_path, monkeypatch):
    _install_fake_dist(
        tmp_path,
        "thirdparty_net",
        """
        from lungseg import hookimpl

        @hookimpl
        def lungseg_add_models(registry):
            registry.add("third-net", lambda: "built")
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry()
    assert registry.get("model", "third-net").plugin == "thirdparty_net:thirdparty_net"
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    registry = load_registry()
    assert "third-net" not in registry.names("model")
    assert "unet" in registry.names("model")
    sys.modules.pop("thirdparty_net", None)


def test_broken_third_party_plugins_are_reported_not_fatal(tmp_path, monkeypatch):
    _install_fake_dist(tmp_path, "broken_import", "import does_not_exist_anywhere\n")
    _install_fake_dist(
        tmp_path,
        "broken_hook",
        """
        from lungseg import hookimpl

        @hookimpl
        def lungseg_add_models(registry, unexpected_argument):
            pass
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry()
    assert "import failed" in registry.broken["broken_import:broken_import"]
    assert "invalid hook" in registry.broken["broken_hook:broken_hook"]
    assert "unet" in registry.names("model")
    with pytest.raises(RecipeError, match="failed to load: broken_hook"):
        registry.get("model", "nope")
    for mod in ("broken_import", "broken_hook"):
        sys.modules.pop(mod, None)
