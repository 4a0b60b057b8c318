"""The preprocessing chain and the ``lungseg preprocess`` stage."""
