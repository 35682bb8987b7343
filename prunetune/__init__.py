"""prunetune: search per-layer structured pruning ratios and bit-widths of a PyTorch CNN.

The public API is `__all__`. Its names never shadow a subpackage: `prunetune.compress` is the
compression subpackage (calling it still works, deprecated), the function is `compress_model`.
"""

from __future__ import annotations

__version__ = "0.1.0"

# the public API loads on first use (PEP 562): `prunetune --help` and argument errors never import
# torch. Name -> "module" (same name there) or "module:name".
_LAZY = {
    "CompressionConfig": "prunetune.compress",
    "compress_model": "prunetune.compress:compress",
    "prune": "prunetune.compress",
    "export_model": "prunetune.export",
    "load_compressed": "prunetune.export",
    "count_macs": "prunetune.measure",
    "run_search": "prunetune.search.python_api",
    "SearchRun": "prunetune.search.python_api",
}


def __getattr__(name: str):
    """The public functions, imported from their modules when first asked for; `compress` (the
    subpackage, before anything imported it) too."""
    import importlib

    if name in _LAZY:
        module, _, attr = _LAZY[name].partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        globals()[name] = value
        return value
    if name == "compress":
        return importlib.import_module("prunetune.compress")
    raise AttributeError(f"module 'prunetune' has no attribute {name!r}")


__all__ = [
    "CompressionConfig",
    "SearchRun",
    "__version__",
    "compress_model",
    "count_macs",
    "export_model",
    "load_compressed",
    "prune",
    "run_search",
]
