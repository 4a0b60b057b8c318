"""The default plugins keep every contract of ``lungseg.testing``, and the checks catch breakage."""

from __future__ import annotations

import inspect
import textwrap
from importlib import metadata

import numpy as np
import pytest
import torch
from torch import nn

from lungseg import api, testing
from lungseg.api import DistributedWeightedSampler, Volume
from lungseg.core.errors import RecipeError
from lungseg.core.markers import ENTRY_POINT_GROUP
from lungseg.plugins.preprocessing import Resize

DEFAULT_PLUGIN_MODULES = sorted(
    ep.value
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
    if ep.dist is not None and ep.dist.name == "lungseg"
)


@pytest.mark.parametrize(
    ("name", "params", "min_dice"),
    [
        ("canonical", {}, 1.0),
        ("skip-slices", {"count": 10}, 1.0),
        ("skip-slices", {"count": 33}, 1.0),  # crops into the tumour: only the kept part counts
        ("normalize", {"divisor": 3071}, 1.0),
        ("normalize", {"clip": [-1000, 400]}, 1.0),
        ("resize", {"size": 32}, 0.8),  # nearest-neighbour both ways
        ("resize", {"size": 13}, 0.6),  # downsampling a 6-voxel block loses a row or column
        ("resample", {"spacing": 0.6, "size": 32}, 0.95),  # up-sampled and padded
        ("resample", {"spacing": 0.8, "size": 16}, 1.0),  # cropped at the probe's spacing
    ],
)
def test_default_preprocessors(name, params, min_dice):
    testing.check_registered("preprocessor", name, params, min_dice=min_dice)


@pytest.mark.parametrize("params", [{}, {"num_samples": 12}, {"replacement": False}])
def test_tumor_weighted_sampler(params):
    testing.check_registered("sampler", "tumor-weighted", params)


@pytest.mark.parametrize("params", [{}, {"num_samples": 30}])
def test_uniform_sampler(params):
    testing.check_registered("sampler", "uniform", params)


def test_unet_at_the_recipe_size_and_odd_sizes():
    testing.check_registered("model", "unet", {"features": [4, 8]}, size=32, odd_size=(17, 23))


@pytest.mark.parametrize("params", [{}, {"pos_weight": 3.0}])
def test_bce_loss(params):
    testing.check_registered("loss", "bce", params)


@pytest.mark.parametrize("name", ["dice", "dice-bce", "focal"])
def test_default_losses(name):
    testing.check_registered("loss", name)  # tests/plugins/test_losses.py checks their values


@pytest.mark.parametrize("name", ["dice", "iou", "precision", "recall"])
def test_overlap_metrics(name):
    testing.check_registered("metric", name, best=1.0, worst=0.0, empty=float("nan"))


@pytest.mark.parametrize(
    ("name", "params"),
    [("min-size", {"min_ml": 0.05}), ("largest-components", {}), ("inside-lungs", {})],
)
def test_default_postprocessors(name, params):
    testing.check_registered("postprocessor", name, params)


def test_lung_crop_keeps_the_crop_contract():
    from lungseg.data.synth import make_case

    image, label, affine = make_case(2, size=32, slices=48, abdomen_slices=12)
    probe = Volume(image.astype(np.float32), label, affine, "synthetic chest")
    testing.check_registered("preprocessor", "lung-crop", {}, volume=probe, min_dice=1.0)


@pytest.mark.parametrize("module", DEFAULT_PLUGIN_MODULES)
def test_default_plugins_use_only_the_public_api_and_register_lightly(module):
    testing.check_plugin_module(module)


@pytest.mark.parametrize("module", ["lungseg_torchvision.models", "lungseg_torchvision.losses"])
def test_the_example_plugin_uses_only_the_public_api_and_registers_lightly(module):
    pytest.importorskip("lungseg_torchvision")
    testing.check_plugin_module(module)


def _signature(factory) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(factory).parameters.values()]


def test_lazy_factories_take_what_their_classes_take():
    from lungseg.plugins import _unet, unet

    assert _signature(unet.unet) == _signature(_unet.UNet)
    assert unet.UNet is _unet.UNet and unet.DoubleConv is _unet.DoubleConv


def test_the_example_lazy_factories_take_what_their_classes_take():
    pytest.importorskip("lungseg_torchvision")
    from lungseg_torchvision import losses

    assert _signature(losses.tversky) == _signature(losses.TverskyLoss)


def test_the_public_api_resolves_every_name():
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'Chain'"):
        _ = api.Chain


def test_unknown_kind_is_rejected():
    with pytest.raises(AssertionError, match="unknown kind 'models'"):
        testing.check_registered("models", "x")


# The checks must fail on plugins that break the contract.


class _SigmoidNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


class _StridedNet(_SigmoidNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)[:, :, ::2, ::2]


class _UnusedParameterNet(_SigmoidNet):
    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize(
    ("net", "message"),
    [
        (_SigmoidNet, "logits, not probabilities"),
        (_StridedNet, r"gave output \(2, 1, 16, 16\)"),
        (_UnusedParameterNet, "no finite gradient reaches parameter 'unused.weight'"),
    ],
)
def test_model_check_catches(net, message):
    with pytest.raises(AssertionError, match=message):
        testing.check_model(net)


def test_model_check_accepts_a_plain_conv():
    testing.check_model(lambda: nn.Conv2d(1, 1, 3, padding=1))


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        (lambda logits, target: (logits - target).mean(), "finite and >= 0"),
        (lambda logits, target: ((logits - target) ** 2).mean(dim=0), "scalar tensor"),
        (lambda logits, target: torch.tensor(1.0), "not differentiable"),
        (
            lambda logits, target: nn.functional.binary_cross_entropy_with_logits(-logits, target),
            "perfect < random < wrong",
        ),
    ],
)
def test_loss_check_catches(loss, message):
    with pytest.raises(AssertionError, match=message):
        testing.check_loss(loss)


def _dice_zero_on_empty(pred, truth, spacing=()):
    total = pred.sum() + truth.sum()
    return 0.0 if total == 0 else float(2 * (pred & truth).sum() / total)


def test_metric_check_catches_an_undocumented_empty_value():
    with pytest.raises(AssertionError, match="documented nan, got 0.0"):
        testing.check_metric(_dice_zero_on_empty)
    testing.check_metric(_dice_zero_on_empty, empty=0.0)  # documented: passes


@pytest.mark.parametrize(
    ("value", "message"), [(None, "NoneType None"), (1, "int 1"), (True, "bool True")]
)
def test_metric_check_catches_a_value_that_is_not_a_float(value, message):
    with pytest.raises(AssertionError, match=f"must return a float.*got {message}"):
        testing.check_metric(lambda pred, truth, spacing=(): value)


def test_metric_check_catches_a_wrong_orientation():
    def one_minus_dice(pred, truth, spacing=()):
        return 1.0 - _dice_zero_on_empty(pred, truth)

    with pytest.raises(AssertionError, match="identical masks must give 1.0"):
        testing.check_metric(one_minus_dice, empty=1.0)
    testing.check_metric(one_minus_dice, best=0.0, worst=1.0, empty=1.0)


def _every_rank_draws_everything(labels, *, num_replicas=1, rank=0, seed=0):
    return DistributedWeightedSampler(np.ones(len(labels)), seed=seed)


def _no_epochs(labels, *, num_replicas=1, rank=0, seed=0):
    sampler = DistributedWeightedSampler(np.ones(len(labels)), None, True, num_replicas, rank)
    sampler.set_epoch = lambda epoch: None
    return sampler


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_every_rank_draws_everything, "shares together differ"),
        (_no_epochs, "set_epoch"),
    ],
)
def test_sampler_check_catches(build, message):
    with pytest.raises(AssertionError, match=message):
        testing.check_sampler(build)


class _ForgetfulResize(Resize):
    def invert(self, array, info, *, is_label):
        return array


class _NumpyInfoResize(Resize):
    def apply(self, volume):
        out, info = super().apply(volume)
        return out, {"in_plane": np.array(info["in_plane"])}


class _Float64Resize(Resize):
    def apply(self, volume):
        out, info = super().apply(volume)
        return Volume(out.image.astype(np.float64), out.mask, out.affine, out.source), info


class _Crop:
    """Keeps slices 10:35 of the probe, recording ``info`` (the crop contract's keys or not)."""

    def __init__(self, info: dict) -> None:
        self.info = info

    def apply(self, volume):
        out = api.crop_slices(volume, 10, 35)[0]
        return out, dict(self.info)

    def invert(self, array, info, *, is_label):
        return api.uncrop_slices(array, {"start": 10, "stop": 35, "depth": 40})


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (_ForgetfulResize(size=16), "not the input"),
        (_NumpyInfoResize(size=16), "JSON-serialisable"),
        (_Float64Resize(size=16), "float32"),
        (_Crop({}), r"40 slices into 25: a crop's info must hold start, stop, depth"),
        (_Crop({"start": 10, "stop": 35}), r"it holds \['start', 'stop'\]"),
        (_Crop({"start": 10, "stop": 35, "depth": 41}), "slice count 40, got 41"),
        (_Crop({"start": 10, "stop": 36, "depth": 40}), "span the 25 slices"),
        (_Crop({"start": 10.0, "stop": 35, "depth": 40}), "must be ints"),
    ],
)
def test_preprocessor_check_catches(step, message):
    with pytest.raises(AssertionError, match=message):
        testing.check_preprocessor(step)


def test_a_crop_recording_the_contract_keys_passes():
    testing.check_preprocessor(_Crop({"start": 10, "stop": 35, "depth": 40, "extra": 1}))


def _plugin_source(tmp_path, monkeypatch, name: str, source: str) -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


_HOOK = """
@hookimpl
def lungseg_add_models(registry):
    registry.add("probe-net", lambda width=3: width)
"""


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("from lungseg import hookimpl\nimport torch\n", "imported torch"),
        (
            "from lungseg import hookimpl\nfrom lungseg.data.volume import Volume\n",
            "lungseg.data.volume",
        ),
        ("from lungseg import hookimpl, volume\n", "lungseg exports no volume"),
        ("from lungseg import hookimpl\nfrom lungseg.api import Chain\n", "exports no Chain"),
        (
            "from lungseg import hookimpl\nfrom lungseg.plugins.preprocessing import Resize\n",
            "lungseg.plugins.preprocessing Resize, which is not lungseg's public API",
        ),
        (
            "from lungseg import hookimpl\ndef f():\n    import lungseg.training.sampling\n",
            "lungseg.training.sampling",
        ),
        ("from lungseg import hookimpl\n", None),
    ],
)
def test_plugin_module_check(tmp_path, monkeypatch, source, message):
    name = f"probe_plugin_{abs(hash(source))}"
    _plugin_source(tmp_path, monkeypatch, name, source + _HOOK)
    if message is None:
        testing.check_plugin_module(name)
        return
    with pytest.raises(AssertionError, match=message):
        testing.check_plugin_module(name)


def test_plugin_module_check_catches_a_plugin_that_registers_nothing(tmp_path, monkeypatch):
    _plugin_source(tmp_path, monkeypatch, "probe_empty_plugin", "X = 1\n")
    with pytest.raises(AssertionError, match="registered no component"):
        testing.check_plugin_module("probe_empty_plugin")


def test_postprocessor_check_catches():
    def grows(mask, image, spacing):
        return np.ones(mask.shape, dtype=bool)

    def in_place(mask, image, spacing):
        mask[0] = True
        return mask

    with pytest.raises(AssertionError, match="empty mask empty"):
        testing.check_postprocessor(grows)
    with pytest.raises(AssertionError, match="in place"):
        testing.check_postprocessor(in_place)


def test_every_hook_is_documented_and_has_a_check():
    import inspect
    from pathlib import Path

    from lungseg.core import hookspecs
    from lungseg.core.manager import _HOOKS

    docs = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    specs = {
        n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("lungseg_")
    }
    assert specs == set(_HOOKS.values())
    for hook in specs:
        assert f"### `{hook}(registry)`" in docs, f"docs/plugins.md does not document {hook}"
    for kind in _HOOKS:
        assert f"`{kind}`" in docs
        with pytest.raises(RecipeError, match=f"unknown {kind} 'no-such-name'"):
            testing.check_registered(kind, "no-such-name")
