"""The core: hook specifications, plugin registry, recipes, composition root, safe writing."""
