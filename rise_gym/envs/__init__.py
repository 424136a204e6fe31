"""The environments: the multi-turn base class and its math, arithmetic and code tasks."""

from rise_gym.envs.base import DEFAULT_RETRY_PROMPT, Grade, MultiTurnEnv
from rise_gym.envs.registration import ENV_IDS, make, register_envs

__all__ = ["DEFAULT_RETRY_PROMPT", "ENV_IDS", "Grade", "MultiTurnEnv", "make", "register_envs"]
