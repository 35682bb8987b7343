"""Stored test data and the scripts that make it."""
