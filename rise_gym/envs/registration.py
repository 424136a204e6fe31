"""Registers every rise-gym environment id with Gymnasium."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

ENV_IDS: dict[str, tuple[str, dict[str, object]]] = {
    "RISE-GSM8K-v0": ("rise_gym.envs.math:MathEnv", {"dataset": "gsm8k"}),
    "RISE-MATH-v0": ("rise_gym.envs.math:MathEnv", {"dataset": "math"}),
    "RISE-MATH500-v0": ("rise_gym.envs.math:MathEnv", {"dataset": "math500"}),
    "RISE-Arithmetic-v0": ("rise_gym.envs.arithmetic:ArithmeticEnv", {}),
    "RISE-HumanEval-v0": ("rise_gym.envs.code:CodeEnv", {"dataset": "humaneval"}),
    "RISE-MBPP-v0": ("rise_gym.envs.code:CodeEnv", {"dataset": "mbpp"}),
    "RISE-CoNaLa-v0": ("rise_gym.envs.conala:ConalaEnv", {}),
    "RISE-Stopping-v0": ("rise_gym.envs.stopping:StoppingEnv", {}),
}
"""Every registered id, its entry point and its default keyword arguments."""


def register_envs() -> None:
    """Register every id in `ENV_IDS` (idempotent)."""
    for env_id, (entry_point, kwargs) in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, kwargs=dict(kwargs))


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` for rise-gym ids, with an error listing the valid ids on a typo.

    Args:
        env_id: One of `ENV_IDS`.
        **kwargs: Keyword arguments of the environment.

    Raises:
        gymnasium.error.NameNotFound: ``env_id`` is not a rise-gym id.
    """
    if env_id not in ENV_IDS:
        raise gym.error.NameNotFound(
            f"unknown environment id {env_id!r}; valid ids: {', '.join(ENV_IDS)}"
        )
    return gym.make(env_id, **kwargs)
