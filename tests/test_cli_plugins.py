"""``lungseg plugins`` shows plain text, whatever markup the plugins' docstrings use."""

from __future__ import annotations

import re
import subprocess
import sys

from lungseg.core.registry import Registry, plain_text


def test_plain_text_drops_rst_roles_and_literals():
    assert plain_text("see :class:`~lungseg.api.Foo` and :func:`bar <x.bar>`") == (
        "see lungseg.api.Foo and bar"
    )
    assert plain_text("``dice_weight * (1 - soft Dice)`` on logits") == (
        "dice_weight * (1 - soft Dice) on logits"
    )
    assert plain_text("a `title` and :mod:`lungseg`, (mm): 3") == "a title and lungseg, (mm): 3"


def test_descriptions_from_docstrings_and_given_ones_are_plain():
    def factory(size: int = 4):
        """Resize to ``size`` with :func:`~scipy.ndimage.zoom`.

        More text.
        """

    registry = Registry()
    registry.add("preprocessor", "a", factory, "me")
    registry.add("preprocessor", "b", factory, "me", description="uses :class:`x.Y`")
    assert [e.description for e in registry.entries("preprocessor")] == [
        "Resize to size with scipy.ndimage.zoom.",
        "uses x.Y",
    ]


def test_plugins_output_has_no_markup():
    result = subprocess.run(
        [sys.executable, "-m", "lungseg", "plugins"],
        capture_output=True,
        encoding="utf-8",
        timeout=120,
    )
    assert result.returncode == 0 and result.stderr == ""
    assert "Drop the first count axial slices" in result.stdout  # was ``count``
    assert "`" not in result.stdout
    assert not re.search(r":(class|func|mod|meth|attr|data):", result.stdout)
