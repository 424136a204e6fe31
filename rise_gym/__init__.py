"""rise-gym: Gymnasium environments for RISE (Recursive Introspection).

Importing the package registers the environments::

    import gymnasium as gym
    import rise_gym

    env = gym.make("RISE-GSM8K-v0", max_turns=5)
"""

from rise_gym.envs import ENV_IDS, Grade, MultiTurnEnv, make, register_envs
from rise_gym.errors import (
    DatasetNotFound,
    EpisodeFinished,
    EpisodeNotStarted,
    GraderTimeout,
    RiseGymError,
    SandboxError,
)
from rise_gym.problems import Problem
from rise_gym.records import EpisodeRecord, Sample, TurnRecord
from rise_gym.spaces import ChatSpace, Conversation, FreeText, Message

__version__ = "0.1.0"

register_envs()

__all__ = [
    "ENV_IDS",
    "ChatSpace",
    "Conversation",
    "DatasetNotFound",
    "EpisodeFinished",
    "EpisodeNotStarted",
    "EpisodeRecord",
    "FreeText",
    "Grade",
    "GraderTimeout",
    "Message",
    "MultiTurnEnv",
    "Problem",
    "RiseGymError",
    "SandboxError",
    "Sample",
    "TurnRecord",
    "__version__",
    "make",
]
