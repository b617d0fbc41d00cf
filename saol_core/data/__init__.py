"""Datasets and loaders: ``build_data(cfg.data, seed=..., batch_size=...) -> DataBundle``.

Modules: common (contract, seeding, sharding, normalization), digits (offline cluttered digits),
resident (device-resident loader for small images), stream (DataLoader workers for large images),
files (archives, decoding, decode cache), layouts (folder / CUB / wsolevaluation / ImageNet readers),
build (the dispatcher).
"""
from .build import build_data
from .common import DataBundle, DatasetError, Loader

__all__ = ["DataBundle", "DatasetError", "Loader", "build_data"]
