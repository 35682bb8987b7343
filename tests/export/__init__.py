"""Unit tests of prunetune.export (mirrors prunetune/export/)."""
