"""Unit tests of prunetune.spaces (mirrors prunetune/spaces/)."""
