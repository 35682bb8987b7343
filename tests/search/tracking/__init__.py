"""Unit tests of prunetune.search.tracking (mirrors prunetune/search/tracking/)."""
