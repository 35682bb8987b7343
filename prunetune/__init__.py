"""prunetune: search per-layer structured pruning ratios and bit-widths of a PyTorch CNN."""
from __future__ import annotations

__version__ = "0.1.0"

from prunetune.compress import CompressionConfig, compress, prune
from prunetune.export import export_model, load_compressed
from prunetune.measure import count_macs

__all__ = ["CompressionConfig", "__version__", "compress", "count_macs", "export_model", "load_compressed",
           "prune"]
