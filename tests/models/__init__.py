"""Unit tests of prunetune.models (mirrors prunetune/models/)."""
