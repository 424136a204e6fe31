"""Gymnasium spaces for free Unicode text and chat conversations.

Gymnasium's `Text` space admits a fixed character set only; model output is arbitrary
Unicode, so the environments use these spaces instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.spaces import Space

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""

Conversation = list[Message]
"""A conversation: the chat messages so far, oldest first."""

ROLES = ("system", "user", "assistant")
_SAMPLE_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 .,+-*/=()#\\{}$\néß∑√π→你好"


class FreeText(Space[str]):
    """Any Python ``str`` up to ``max_length`` characters, including arbitrary Unicode.

    Example:
        >>> space = FreeText(max_length=10, seed=0)
        >>> space.contains("héllo ∑")
        True
        >>> space.contains(b"bytes")
        False
    """

    def __init__(
        self, max_length: int = 1_000_000, *, seed: int | np.random.Generator | None = None
    ):
        """Create the space.

        Args:
            max_length: The longest string the space contains.
            seed: Seed of the space's own random generator (used by `sample`).
        """
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.max_length = max_length
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        """Free text has no fixed-size numeric form."""
        return False

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """Draw a random string of length 0..min(64, max_length) from a small Unicode alphabet."""
        length = int(self.np_random.integers(0, min(64, self.max_length) + 1))
        picks = self.np_random.integers(0, len(_SAMPLE_ALPHABET), size=length)
        return "".join(_SAMPLE_ALPHABET[i] for i in picks)

    def contains(self, x: Any) -> bool:
        """Whether ``x`` is a ``str`` no longer than ``max_length``."""
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"FreeText(max_length={self.max_length})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FreeText) and other.max_length == self.max_length


class ChatSpace(Space[Conversation]):
    """Conversations: lists of ``{"role", "content"}`` messages with free-text content."""

    def __init__(
        self,
        max_messages: int = 1_000,
        max_length: int = 1_000_000,
        *,
        seed: int | np.random.Generator | None = None,
    ):
        """Create the space.

        Args:
            max_messages: The most messages a conversation in the space may hold.
            max_length: The longest message content, in characters.
            seed: Seed of the space's own random generator (used by `sample`).
        """
        self.max_messages = max_messages
        self.content_space = FreeText(max_length)
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        """Conversations have no fixed-size numeric form."""
        return False

    def seed(self, seed: int | None = None) -> int | list[int] | dict[str, int]:
        """Seed this space and its content space."""
        seeds = super().seed(seed)
        self.content_space.seed(int(self.np_random.integers(2**31)))
        return seeds

    def sample(self, mask: Any = None, probability: Any = None) -> Conversation:
        """Draw a short random conversation that starts with a user message."""
        length = int(self.np_random.integers(1, min(6, self.max_messages) + 1))
        roles = ["user" if i % 2 == 0 else "assistant" for i in range(length)]
        return [{"role": role, "content": self.content_space.sample()} for role in roles]

    def contains(self, x: Any) -> bool:
        """Whether ``x`` is a list of well-formed messages."""
        return (
            isinstance(x, list)
            and len(x) <= self.max_messages
            and all(_is_message(message, self.content_space) for message in x)
        )

    def __repr__(self) -> str:
        return f"ChatSpace(max_messages={self.max_messages})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ChatSpace)
            and other.max_messages == self.max_messages
            and other.content_space == self.content_space
        )


def _is_message(message: Any, content_space: FreeText) -> bool:
    return (
        isinstance(message, dict)
        and set(message) == {"role", "content"}
        and message["role"] in ROLES
        and content_space.contains(message["content"])
    )


def copy_conversation(conversation: Sequence[Message]) -> Conversation:
    """Return a copy whose messages can be changed without touching the original."""
    return [dict(message) for message in conversation]
