"""A played episode as a training sequence (prompt_ids, completion_ids, env_mask) and a return."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agents.online_rl.config import CREDITS
from rise_gym.envs.base import MultiTurnEnv
from rise_gym.records import EpisodeRecord
from rise_gym.spaces import Conversation

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class EpisodeSequence:
    """One episode as a training sequence (see `agents.online_rl`).

    Attributes:
        prompt_ids: The opening prompt's tokens.
        completion_ids: The rest of the conversation's tokens, up to the last model token.
        env_mask: 1 for each model token of ``completion_ids``, 0 for the others.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]


def episode_sequence(
    tokenizer: PreTrainedTokenizerBase,
    conversation: Conversation,
    stopped: Sequence[bool],
    *,
    end_token_ids: Sequence[int],
) -> EpisodeSequence:
    """The chat template's tokens of a whole episode, split and masked for training.

    Args:
        tokenizer: A fast tokenizer with a chat template.
        conversation: The opening messages, then assistant and user messages in turn,
            ending with an assistant message.
        stopped: For each assistant message, whether the model ended it itself (its
            end-of-turn token is then a model token).
        end_token_ids: The model's end-of-turn tokens.

    Returns:
        The sequence; ``prompt_ids + completion_ids`` is a prefix of the tokens of the
        rendered conversation, missing only the template's text after the last response's
        end token.

    Raises:
        ValueError: The tokenizer is not fast, ``stopped`` does not match the responses,
            or the template does not render earlier turns verbatim (see `response_spans`).
    """
    if not tokenizer.is_fast:
        raise ValueError("episode_sequence needs a fast tokenizer (token offsets)")
    text = _render(tokenizer, conversation, reply=False)
    spans = response_spans(tokenizer, conversation, text)
    if not spans or len(stopped) != len(spans):
        raise ValueError(
            f"the conversation has {len(spans)} responses but stopped has {len(stopped)} flags"
        )
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    mask = [0] * len(ids)
    for (start, end), ended in zip(spans, stopped):
        inside = [i for i, (first, _) in enumerate(offsets) if start <= first < end]
        for i in inside:
            mask[i] = 1
        after = next((i for i, (first, _) in enumerate(offsets) if first >= end), None)
        if ended and after is not None and offsets[after][0] == end and ids[after] in end_token_ids:
            mask[after] = 1
    prompt_length = sum(first < spans[0][0] for first, _ in offsets)
    model_tokens = [i for i, flag in enumerate(mask) if flag]
    stop = model_tokens[-1] + 1 if model_tokens else len(ids)
    return EpisodeSequence(ids[:prompt_length], ids[prompt_length:stop], mask[prompt_length:stop])


def response_spans(
    tokenizer: PreTrainedTokenizerBase, conversation: Conversation, text: str
) -> list[tuple[int, int]]:
    """Character spans of the assistant messages' contents in ``text``, the rendering.

    Raises:
        ValueError: The rendering of the conversation before a response, ready for the
            reply, is not a prefix of ``text`` followed by the response verbatim (a
            template that rewrites or drops earlier turns).
    """
    spans = []
    for position, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, conversation[:position], reply=True)
        if not text.startswith(before + message["content"]):
            raise ValueError(
                f"the chat template of {tokenizer.name_or_path!r} does not render "
                f"message {position} after the earlier turns verbatim; online multi-turn "
                "RL needs a template that keeps every earlier turn as it was"
            )
        spans.append((len(before), len(before) + len(message["content"])))
    return spans


def episode_return(
    turn_correct: Sequence[bool],
    credit: str = "final",
    *,
    discount: float = 1.0,
    bonus: float = 0.0,
) -> float:
    """An episode's return from its per-turn rewards (1.0 correct, else 0.0).

    >>> episode_return([False, True], "final", bonus=0.5)
    1.5
    >>> episode_return([True, False, True], "discounted", discount=0.5)
    1.25

    Raises:
        ValueError: No turn was played, or ``credit`` is unknown.
    """
    if not turn_correct:
        raise ValueError("an episode needs at least one turn to have a return")
    rewards = [1.0 if correct else 0.0 for correct in turn_correct]
    if credit == "final":
        value = rewards[-1]
    elif credit == "discounted":
        value = sum(discount**turn * reward for turn, reward in enumerate(rewards))
    else:
        raise ValueError(f"credit must be one of {list(CREDITS)}, got {credit!r}")
    if rewards[-1] > rewards[0]:
        value += bonus
    elif rewards[-1] < rewards[0]:
        value -= bonus
    return value


def final_conversation(env: MultiTurnEnv, record: EpisodeRecord) -> Conversation:
    """The whole conversation of a recorded episode, replayed on ``env``.

    With ``history_window=None`` the environment's last observation is the opening
    prompt, then every response and retry prompt, ending with the last response.
    """
    if env.history_window is not None:
        raise ValueError("final_conversation needs an environment with history_window=None")
    observation, _ = env.reset(seed=record.seed, options={"index": record.index})
    for turn in record.turns:
        observation, *_ = env.step(turn.response)
    return observation


def stopped_by_model(record: EpisodeRecord) -> list[bool]:
    """Whether the model ended each response itself (not cut at max_new_tokens)."""
    return [turn.metadata.get("finish_reason") != "length" for turn in record.turns]


def _render(tokenizer: PreTrainedTokenizerBase, conversation: Conversation, *, reply: bool) -> str:
    text = tokenizer.apply_chat_template(
        list(conversation), tokenize=False, add_generation_prompt=reply
    )
    assert isinstance(text, str)
    return text
