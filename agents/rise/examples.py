"""Weighted training examples, their tokenisation with response-only labels, and batching.

An example is a state (a chat conversation ending with a user message), the response
to learn at that state and its RWR weight. Tokenised, the prompt is the conversation
rendered by the tokenizer's chat template with the generation prompt, and the target is
the rest of the rendered assistant turn, up to and including the end-of-sequence token
so that the model learns to stop. Only target tokens have labels; every prompt token
(system prompt, question, earlier turns, retry prompts) is labelled ``IGNORE_INDEX``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from rise_gym.spaces import Conversation

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""The label of tokens that are context, not targets (PyTorch's cross-entropy default)."""


@dataclass(frozen=True)
class WeightedExample:
    """A response to learn at a state, with its weight.

    Attributes:
        conversation: The state: chat messages ending with a user message.
        response: The assistant's response to learn (the action).
        weight: Its RWR weight, e.g. ``rwr_weight(reward)``; only ratios between
            weights matter (see `agents.rise.rwr`).
    """

    conversation: Conversation
    response: str
    weight: float

    def __post_init__(self) -> None:
        if not self.conversation or self.conversation[-1].get("role") != "user":
            raise ValueError(
                "conversation must end with a user message (the state the response answers); "
                f"got roles {[message.get('role') for message in self.conversation]}"
            )
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(
                f"weight must be finite and > 0, got {self.weight}; use rwr_weight(reward, tau) "
                "and drop examples that should not be learned"
            )


class Features(TypedDict):
    """One tokenised example: token ids, labels (``IGNORE_INDEX`` on the prompt), weight."""

    input_ids: list[int]
    labels: list[int]
    weight: float


class RWRDataset(Dataset[Features]):
    """Weighted examples tokenised for training, truncated to ``max_seq_length``.

    A sequence too long loses tokens from the left of its prompt, so the response is
    always whole. An example whose target alone does not fit (with at least one prompt
    token before it) is skipped with a warning rather than trained on a cut response;
    `num_skipped` and `num_truncated` count both cases.
    """

    def __init__(
        self,
        examples: Sequence[WeightedExample],
        tokenizer: PreTrainedTokenizerBase,
        max_seq_length: int,
    ):
        """Tokenise the examples.

        Args:
            examples: The weighted examples.
            tokenizer: A tokenizer with a chat template and an EOS token.
            max_seq_length: The most tokens (prompt + target) of one sequence.

        Raises:
            ValueError: If no example fits in ``max_seq_length``, or the tokenizer has no
                chat template or EOS token.
        """
        if max_seq_length < 2:
            raise ValueError(f"max_seq_length must be >= 2, got {max_seq_length}")
        self.features: list[Features] = []
        self.num_skipped = 0
        self.num_truncated = 0
        for example in examples:
            prompt, target = tokenize_example(example, tokenizer)
            room = max_seq_length - len(target)
            if room < 1:
                self.num_skipped += 1
                continue
            if len(prompt) > room:
                self.num_truncated += 1
                prompt = prompt[-room:]
            self.features.append(
                Features(
                    input_ids=prompt + target,
                    labels=[IGNORE_INDEX] * len(prompt) + target,
                    weight=float(example.weight),
                )
            )
        if self.num_skipped:
            logger.warning(
                "Skipped %d of %d examples whose response alone exceeds max_seq_length=%d",
                self.num_skipped,
                len(examples),
                max_seq_length,
            )
        if self.num_truncated:
            logger.info("Truncated the prompt of %d examples from the left", self.num_truncated)
        if not self.features:
            raise ValueError(
                f"No example fits in max_seq_length={max_seq_length} ({len(examples)} given); "
                "raise max_seq_length or shorten the responses"
            )

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> Features:
        return self.features[index]


def tokenize_example(
    example: WeightedExample, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[int], list[int]]:
    """Split an example into prompt tokens and target tokens, untruncated.

    The prompt and the target are tokenised separately, as at generation time: the
    prompt alone, then the tokens the model should produce. The target ends at the last
    EOS token of the rendered assistant turn (what follows, such as a newline, is never
    generated); if the chat template renders no EOS token, one is appended.

    Args:
        example: The weighted example.
        tokenizer: A tokenizer with a chat template and an EOS token.

    Returns:
        The prompt's token ids and the target's token ids.

    Raises:
        ValueError: If the tokenizer has no EOS token, or its chat template does not
            render the conversation with the response as an extension of the prompt.
    """
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("The tokenizer has no eos_token; set tokenizer.eos_token first")
    turn = {"role": "assistant", "content": example.response}
    prompt_text = tokenizer.apply_chat_template(
        example.conversation, tokenize=False, add_generation_prompt=True
    )
    full_text = tokenizer.apply_chat_template([*example.conversation, turn], tokenize=False)
    if not (isinstance(prompt_text, str) and isinstance(full_text, str)):
        raise ValueError("apply_chat_template(tokenize=False) did not return a string")
    if not full_text.startswith(prompt_text):
        raise ValueError(
            "The chat template renders the conversation differently once the response is "
            "appended, so the prompt cannot be masked exactly; use a template whose "
            "assistant turn extends the generation prompt"
        )
    prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    target = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    if eos_id in target:
        last_eos = len(target) - 1 - target[::-1].index(eos_id)
        target = target[: last_eos + 1]
    else:
        target = [*target, eos_id]
    return prompt, target


@dataclass
class RWRCollator:
    """Right-pads features into a batch with a ``weights`` tensor.

    Attributes:
        pad_token_id: The id put in padding positions (they are masked out of
            attention and labels, so any id works).
        pad_to_multiple_of: Pad the length to a multiple of this (e.g. 8 for tensor
            cores); None pads to the longest sequence of the batch.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[Features]) -> dict[str, torch.Tensor]:
        """Collate features into ``input_ids``, ``attention_mask``, ``labels``, ``weights``.

        Args:
            features: The tokenised examples of one batch.

        Returns:
            Tensors of shape ``(batch, length)``, and ``weights`` of shape ``(batch,)``.
        """
        length = max(len(feature["input_ids"]) for feature in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(features), length), dtype=torch.long)
        for row, feature in enumerate(features):
            size = len(feature["input_ids"])
            input_ids[row, :size] = torch.tensor(feature["input_ids"])
            labels[row, :size] = torch.tensor(feature["labels"])
            attention_mask[row, :size] = 1
        weights = torch.tensor([feature["weight"] for feature in features], dtype=torch.float32)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "weights": weights,
        }
