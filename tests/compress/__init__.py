"""Unit tests of prunetune.compress (mirrors prunetune/compress/)."""
