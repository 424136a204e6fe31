"""The agent protocol: act on a batch of observations, return one response each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rise_gym.spaces import Conversation


@dataclass
class Action:
    """An agent's response to one observation, with what it cost.

    Attributes:
        text: The response submitted to the environment.
        llm_calls: Generation requests spent on it (n samples count as n).
        generated_tokens: Tokens generated for it, all samples and helper calls included.
        samples: Independent candidate responses behind ``text`` (parallel sampling);
            the rollout engine grades each so mk@t1 and pk@t1 can be computed.
        metadata: Anything else worth recording (e.g. ``mean_logprob``).
    """

    text: str
    llm_calls: int = 0
    generated_tokens: int = 0
    samples: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Agent(Protocol):
    """Anything with a name and an ``act`` method is an agent."""

    name: str

    def act(self, observations: Sequence[Conversation]) -> list[Action | str]:
        """Return one response (an `Action` or a plain string) per observation."""
        ...


class FunctionAgent:
    """Wrap a plain function ``conversation -> response`` as an agent.

    Example:
        >>> agent = FunctionAgent(lambda conversation: "4", name="always-four")
        >>> agent.act([[{"role": "user", "content": "2+2?"}]])[0].text
        '4'
    """

    def __init__(self, respond: Callable[[Conversation], str], name: str | None = None):
        """Wrap ``respond``; ``name`` defaults to the function's name."""
        self.respond = respond
        self.name = name or getattr(respond, "__name__", "function-agent")

    def act(self, observations: Sequence[Conversation]) -> list[Action | str]:
        """Call the wrapped function on each observation."""
        return [Action(text=self.respond(observation)) for observation in observations]


def as_action(response: Action | str) -> Action:
    """Normalise an agent's response to an `Action`."""
    if isinstance(response, Action):
        return response
    if isinstance(response, str):
        return Action(text=response)
    raise TypeError(
        f"an agent must return Action or str per observation, got {type(response).__name__}"
    )
