"""prunetune: search per-layer structured pruning ratios and bit-widths of a PyTorch CNN."""
from __future__ import annotations

__version__ = "0.1.0"
