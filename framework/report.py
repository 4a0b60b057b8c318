"""Moved: the loss curve and the CSV log reader are in :mod:`lungseg.figures`.

Kept only for the imports not yet switched (``lungseg.evaluate`` and two test modules); delete
it once they import from :mod:`lungseg.figures`.
"""

from __future__ import annotations

from lungseg.figures import plot_loss_curve, read_epoch_log

__all__ = ["plot_loss_curve", "read_epoch_log"]
