"""Shared plumbing: strict config loading, registries, batch keys, device choice."""
