"""Demonstration data: the on-disk episode store, the chunk sampler, statistics, collection."""
