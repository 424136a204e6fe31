"""Agents that act in rise-gym environments, and the LLM back ends they use.

Every agent has a ``name`` and ``act(observations) -> list[Action | str]``; see
`agents.base`. Heavy dependencies (torch, transformers) load only when a back end is built.
"""

from agents.base import Action, Agent, FunctionAgent, as_action
from agents.glore import GLoRE
from agents.parallel import ParallelSampling
from agents.rollout import rollout
from agents.self_refine import SelfRefine
from agents.sequential import SequentialRetry

__all__ = [
    "Action",
    "Agent",
    "FunctionAgent",
    "GLoRE",
    "ParallelSampling",
    "SelfRefine",
    "SequentialRetry",
    "as_action",
    "rollout",
]
