"""Chat prompts as token ids, shared by the back ends that tokenize themselves.

Imports neither torch nor transformers: the tokenizer is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rise_gym.spaces import Conversation

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def chat_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Conversation]
) -> list[list[int]]:
    """Token ids of each conversation rendered by the chat template, ready for the reply.

    Raises:
        ValueError: the tokenizer has no chat template.
    """
    if not conversations:
        return []
    if tokenizer.chat_template is None:
        raise ValueError(
            f"the tokenizer of {tokenizer.name_or_path!r} has no chat template; use an "
            "instruct (chat) model, or set tokenizer.chat_template"
        )
    texts = tokenizer.apply_chat_template(
        [list(conversation) for conversation in conversations],
        tokenize=False,
        add_generation_prompt=True,
    )
    return tokenizer(texts, add_special_tokens=False)["input_ids"]
