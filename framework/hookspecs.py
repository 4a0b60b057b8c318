"""Hook specifications: the whole contract between lungseg and its plugins.

Every hook receives a :class:`~lungseg.registry.KindRegistry` for one kind of component
and adds named factories to it with ``registry.add(name, factory)``. A factory is any
callable whose keyword parameters are the recipe parameters of that component; lungseg
checks recipe parameters against the factory's signature before calling it.

A plugin is a module or object with functions decorated by :data:`lungseg.hookimpl`,
advertised in the ``lungseg`` entry-point group of its distribution::

    [project.entry-points.lungseg]
    my_plugin = "my_package.lungseg_plugin"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lungseg.markers import hookspec

if TYPE_CHECKING:
    from lungseg.registry import KindRegistry


@hookspec
def lungseg_add_preprocessors(registry: KindRegistry) -> None:
    """Add preprocessing steps.

    Args:
        registry: the preprocessor registry. Each factory returns a
            :class:`lungseg.preprocessing.Step`: ``apply(volume) -> (volume, info)`` maps a
            :class:`lungseg.volume.Volume` forward (image ``(X, Y, Z)`` float32, mask uint8
            or ``None``, slice axis last) and returns, as JSON-ready ``info``, what
            ``invert(array, info, is_label=...)`` needs to map a prediction back to the
            step's input grid.
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
            :class:`lungseg.metrics.Metric`: ``metric(pred, truth, spacing) -> float`` on
            boolean 3D arrays in a case's own geometry (``spacing`` in mm per axis), with
            a documented value for empty masks (``nan`` where undefined).
    """


@hookspec
def lungseg_add_postprocessors(registry: KindRegistry) -> None:
    """Add post-processing steps for predicted masks (used only when a recipe lists them).

    Args:
        registry: the postprocessor registry. Each factory returns a
            :class:`lungseg.inference.PostProcessor`: ``post(mask, image, spacing) -> mask``
            on a boolean ``(X, Y, Z)`` mask in the scan's own geometry, with the scan's
            float32 Hounsfield units ``image`` of the same shape and ``spacing`` in mm per
            axis; it returns a boolean mask of the same shape (an empty mask stays empty).
    """
