"""The policy: composition of encoders, fusion and head; normalization; action execution; checkpoints.

Import from the submodules (``policy.vla_policy``, ``policy.checkpoint``, ...).
"""
