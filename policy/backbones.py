"""Every policy backbone, registered: ``build_policy(config, features)`` picks one by ``backbone.type``."""

from policy import vla_policy, vlm_policy  # noqa: F401  (registration)
from policy.base import POLICIES, Policy, build_policy

__all__ = ["POLICIES", "Policy", "build_policy"]
