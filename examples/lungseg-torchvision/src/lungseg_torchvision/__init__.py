"""lungseg plugins: torchvision segmentation models, and a loss lungseg lacks (Tversky).

Installed with pip, the package advertises :mod:`lungseg_torchvision.models` and
:mod:`lungseg_torchvision.losses` in the ``lungseg`` entry-point group; recipes then use
``model: {name: tv-lraspp-mobilenet}`` or ``loss: {name: tversky}``.
"""

from __future__ import annotations

__version__ = "0.1.0"
