"""Unit tests of prunetune.runtimes (mirrors prunetune/runtimes/)."""
