"""prunetune: search per-layer structured pruning ratios and bit-widths of a PyTorch CNN."""
from __future__ import annotations

__version__ = "0.1.0"

# the public API loads on first use (PEP 562): `prunetune --help` and argument errors never import torch
_LAZY = {"CompressionConfig": "prunetune.compress", "compress": "prunetune.compress", "prune": "prunetune.compress",
         "export_model": "prunetune.export", "load_compressed": "prunetune.export", "count_macs": "prunetune.measure",
         "run_search": "prunetune.search.python_api", "SearchRun": "prunetune.search.python_api"}


def __getattr__(name: str):
    """The public functions, imported from their modules when first asked for."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prunetune' has no attribute {name!r}")


__all__ = ["CompressionConfig", "SearchRun", "__version__", "compress", "count_macs", "export_model",
           "load_compressed", "prune", "run_search"]
