"""The compression engine: structured pruning (physical channel removal), per-layer fake
quantization, unstructured pruning and k-means weight sharing, configs and compressed-model files.

Typical use::

    inv = inventory(model, example)                     # prunable groups, quantizable layers
    config = CompressionConfig(ratios={g.name: 0.3 for g in inv.groups}, bits={"fc": 4})
    small = compress(model, config, example)            # a copy; `model` is untouched
    save_compressed("trial.pt", small, config, {"model": "resnet18", "input_shape": (3, 32, 32),
                                                "num_classes": 10})
    again, header = load_compressed_file("trial.pt")

The package's top level offers `compress` as `prunetune.compress_model`. Calling the package itself,
`prunetune.compress(model, config, example)` (the name before the function was renamed: the
subpackage shadowed it once imported), still works and warns (DeprecationWarning).
"""

import sys
import types
import warnings

from prunetune.compress.artifact import load_compressed_file, save_compressed
from prunetune.compress.config import CompressionConfig, compress, compressed_size_bytes
from prunetune.compress.importance import IMPORTANCES, get_importance
from prunetune.compress.inventory import Inventory, PrunableGroup, QuantLayer, inventory
from prunetune.compress.kmeans import KMEANS_INITS, kmeans_size_bytes, share_weights
from prunetune.compress.prune import PruneReport, kept_channels, prune
from prunetune.compress.quantize import (
    ALLOWED_BITS,
    apply_quantization,
    calibrate_activations,
    size_bytes,
)
from prunetune.compress.unstructured import (
    freeze_zeros,
    global_magnitude_prune,
    magnitude_prune,
    sparsity,
)

__all__ = [
    "ALLOWED_BITS",
    "IMPORTANCES",
    "KMEANS_INITS",
    "CompressionConfig",
    "Inventory",
    "PrunableGroup",
    "PruneReport",
    "QuantLayer",
    "apply_quantization",
    "calibrate_activations",
    "compress",
    "compressed_size_bytes",
    "freeze_zeros",
    "get_importance",
    "global_magnitude_prune",
    "inventory",
    "kept_channels",
    "kmeans_size_bytes",
    "load_compressed_file",
    "magnitude_prune",
    "prune",
    "save_compressed",
    "share_weights",
    "size_bytes",
    "sparsity",
]


class _CallableModule(types.ModuleType):
    """This package, callable as the old `prunetune.compress(...)` function."""

    def __call__(self, *args, **kwargs):
        """`compress(*args, **kwargs)`, with a DeprecationWarning naming `compress_model`."""
        warnings.warn(
            "prunetune.compress(...) is deprecated: call prunetune.compress_model(...)",
            DeprecationWarning,
            stacklevel=2,
        )
        return compress(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
