"""The default plugins. Each module is registered through the ``lungseg`` entry-point group,
exactly as a third-party plugin package would be, and uses only lungseg's public API."""
