"""Hook specifications: the whole contract between lungseg and its plugins.

Every hook receives a :class:`~lungseg.core.registry.KindRegistry` for one kind of component
and adds named factories to it with ``registry.add(name, factory)``. A factory is any
callable whose keyword parameters are the recipe parameters of that component; lungseg
checks recipe parameters against the factory's signature before calling it.

A plugin is a module or object with functions decorated by :data:`lungseg.hookimpl`,
advertised in the ``lungseg`` entry-point group of its distribution::

    [project.entry-points.lungseg]
    my_plugin = "my_package.lungseg_plugin"

The rules every plugin keeps, lungseg's default ones included (:mod:`lungseg.testing`
checks each of them):

**Imports.** From lungseg a plugin imports only ``lungseg`` (:data:`~lungseg.hookimpl` and
the errors) and :mod:`lungseg.api` (volumes, the step protocol, crop helpers, the lung
finder, metric and sampler helpers); every other module is internal and may change. A
plugin's own private modules (``_name``) are its own. Checked by
:func:`lungseg.testing.check_plugin_module`.

**Registration is light.** Every ``lungseg`` command but ``--help`` imports every plugin
and runs its hooks, so neither may import heavy dependencies (torch, torchvision, a model
zoo): ``lungseg preprocess`` and ``lungseg plugins`` import no torch. A factory imports
what it needs when it is called, in its body or from a module imported there; its
signature, read by ``lungseg plugins`` and by recipe checks, must not need them. Also
checked by :func:`lungseg.testing.check_plugin_module` (it registers the plugin alone in a
fresh interpreter and looks at ``sys.modules``).

**Crop steps record where they cut.** A preprocessing step that keeps only some of its
input's axial slices is a crop: its ``info`` holds ``start`` and ``stop`` (it kept input
slices ``start:stop``, ints, ``0 <= start < stop <= depth``) and ``depth`` (its input's slice
count), as :func:`lungseg.api.crop_slices` returns them. lungseg reads them to know which
scan slices the store holds (:meth:`lungseg.preprocess.chain.Chain.kept_slices`). Every other
step keeps the slice count (a reorientation before any crop aside), and no other step uses
these keys. Checked by :func:`lungseg.testing.check_preprocessor`.

**Metrics return floats.** ``metric(pred, truth, spacing)`` returns a float (Python or
NumPy), never ``None``: ``nan`` where the metric is undefined (evaluation leaves it out of
means), ``inf`` only for an unbounded distance, and its docstring's first line states the
value for empty masks. Checked by :func:`lungseg.testing.check_metric`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lungseg.core.markers import hookspec

if TYPE_CHECKING:
    from lungseg.core.registry import KindRegistry


@hookspec
def lungseg_add_preprocessors(registry: KindRegistry) -> None:
    """Add preprocessing steps.

    Args:
        registry: the preprocessor registry. Each factory returns a
            :class:`lungseg.api.Step`: ``apply(volume) -> (volume, info)`` maps a
            :class:`lungseg.api.Volume` forward (image ``(X, Y, Z)`` float32, mask uint8
            or ``None``, slice axis last) and returns, as JSON-ready ``info``, what
            ``invert(array, info, is_label=...)`` needs to map a prediction back to the
            step's input grid. A crop step's ``info`` holds ``start``, ``stop`` and
            ``depth`` (see above).
    """


@hookspec
def lungseg_add_samplers(registry: KindRegistry) -> None:
    """Add training samplers.

    Args:
        registry: the sampler registry. Each factory returns a callable
            ``build(slice_labels, *, num_replicas, rank, seed) -> torch.utils.data.Sampler``,
            where ``slice_labels`` is an int array (1 = tumour in the slice, 0 = none) over the
            training slices, and the sampler yields indices into them. Under DDP it must give
            rank ``rank`` of ``num_replicas`` a disjoint share of each epoch and honour
            ``set_epoch``.
    """


@hookspec
def lungseg_add_models(registry: KindRegistry) -> None:
    """Add segmentation networks.

    Args:
        registry: the model registry. Each factory returns a ``torch.nn.Module`` mapping
            ``(N, in_channels, H, W)`` float images to ``(N, out_channels, H, W)`` logits
            (not probabilities: lungseg applies the sigmoid).
    """


@hookspec
def lungseg_add_losses(registry: KindRegistry) -> None:
    """Add training losses.

    Args:
        registry: the loss registry. Each factory returns a callable
            ``loss(logits, target) -> scalar tensor`` on ``(N, 1, H, W)`` logits and
            float targets in {0, 1}.
    """


@hookspec
def lungseg_add_metrics(registry: KindRegistry) -> None:
    """Add evaluation metrics.

    Args:
        registry: the metric registry. Each factory returns a
            :class:`lungseg.api.Metric`: ``metric(pred, truth, spacing) -> float`` on
            boolean 3D arrays in a case's own geometry (``spacing`` in mm per axis), with
            a documented value for empty masks (``nan`` where undefined; see above).
    """


@hookspec
def lungseg_add_postprocessors(registry: KindRegistry) -> None:
    """Add post-processing steps for predicted masks (used only when a recipe lists them).

    Args:
        registry: the postprocessor registry. Each factory returns a
            :class:`lungseg.inference.predictor.PostProcessor`:
            ``post(mask, image, spacing) -> mask`` on a boolean ``(X, Y, Z)`` mask in the
            scan's own geometry, with the scan's float32 Hounsfield units ``image`` of the
            same shape and ``spacing`` in mm per axis; it returns a boolean mask of the same
            shape (an empty mask stays empty).
    """
