"""Unit tests of prunetune.search on in-memory Optuna studies (mirrors prunetune/search/)."""
