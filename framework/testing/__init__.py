"""Contract checks for plugins: what every component a plugin adds must do.

A plugin's own tests call these on the components its factories build, so a third-party
package is held to the same contract as lungseg's default plugins::

    from lungseg import testing

    def test_my_net_keeps_the_contract():
        testing.check_model(lambda: MyNet(width=8), size=64)

Each ``check_*`` function raises :class:`AssertionError` with a one-line reason on the
first broken rule and returns ``None`` otherwise. They need neither pytest nor the network,
and run in seconds on a CPU with the default tiny sizes. :func:`check_registered` builds a
component by its registered name first, which also proves that the entry point works, and
:func:`check_plugin_module` checks a plugin module's imports and that registering it is
light. torch is imported only by the checks that need it (models, losses).
"""

from __future__ import annotations

from lungseg.testing.components import (
    check_metric,
    check_postprocessor,
    check_preprocessor,
    check_registered,
    check_sampler,
)
from lungseg.testing.modules import HEAVY_MODULES, check_plugin_module
from lungseg.testing.networks import check_loss, check_model

__all__ = [
    "HEAVY_MODULES",
    "check_loss",
    "check_metric",
    "check_model",
    "check_plugin_module",
    "check_postprocessor",
    "check_preprocessor",
    "check_registered",
    "check_sampler",
]
