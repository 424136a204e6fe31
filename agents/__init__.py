"""Agents that act in rise-gym environments, and the LLM back ends they use.

Every agent has a ``name`` and ``act(observations) -> list[Action | str]``; see
`agents.base`. Heavy dependencies (torch, transformers) load only when a back end is built.
Importing it fails with `PackageConflict` when another distribution (e.g. openai-agents)
installs a top-level ``agents`` too.
"""

from rise_gym.doctor import check_agents_package

check_agents_package()

from agents.base import Action, Agent, FunctionAgent, as_action  # noqa: E402
from agents.glore import GLoRE  # noqa: E402
from agents.parallel import ParallelSampling  # noqa: E402
from agents.rollout import rollout  # noqa: E402
from agents.self_refine import SelfRefine  # noqa: E402
from agents.sequential import SequentialRetry  # noqa: E402

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
