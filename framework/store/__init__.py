"""The Zarr slice store."""
