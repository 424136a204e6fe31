"""The GLoRe-style refinement agent: its prompts and call counts, exactly, and a tiny-model run."""

from __future__ import annotations

import pytest

from agents import GLoRE, rollout
from agents.glore import (
    DEFAULT_CRITIC_PROMPT,
    DEFAULT_GLOBAL_PROMPT,
    DEFAULT_LOCAL_PROMPT,
    parse_first_wrong_step,
)
from agents.llm.base import Completion, Generation, SamplingParams
from rise_gym.metrics import average_llm_calls

QUESTION = {"role": "user", "content": "What is 3 + 4, times 2?"}
DRAFT = "3 + 4 = 8\n\n8 * 2 = 16\nSo \\boxed{16}."
RETRY = {"role": "user", "content": "Your answer was not correct. Try again."}


class ScriptedLLM:
    """Answers by the last user message's first word, and records every batched call."""

    name = "scripted"

    def __init__(self, critic_reply: str = "First incorrect step: 1"):
        self.critic_reply = critic_reply
        self.calls: list[list[list[dict[str, str]]]] = []

    def generate(self, conversations, params, adapter=None):
        self.calls.append([[dict(m) for m in c] for c in conversations])
        replies = []
        for conversation in conversations:
            last = conversation[-1]["content"]
            if last.startswith("Here is your solution"):
                replies.append(Generation([Completion(self.critic_reply, 5)]))
            elif last.startswith("Your solution above"):
                replies.append(Generation([Completion("3 + 4 = 7\n7 * 2 = 14\n\\boxed{14}", 7)]))
            else:
                replies.append(Generation([Completion(DRAFT, 3)]))
        return replies


def later(*history: str) -> list[dict[str, str]]:
    """An observation after ``history`` attempts, each followed by the retry prompt."""
    messages = [{"role": "system", "content": "Be careful."}, QUESTION]
    for answer in history:
        messages += [{"role": "assistant", "content": answer}, RETRY]
    return messages


def test_first_turn_is_one_plain_call():
    llm = ScriptedLLM()
    first = later()
    action = GLoRE(llm).act([first])[0]  # type: ignore[arg-type]
    assert llm.calls == [[first]]
    assert (action.text, action.llm_calls, action.generated_tokens) == (DRAFT, 1, 3)


def test_local_refinement_from_the_step_the_critic_names():
    llm = ScriptedLLM("Step 1 adds wrongly.\nFirst incorrect step: 2")
    observation = later("an older attempt", DRAFT)
    action = GLoRE(llm).act([observation])[0]  # type: ignore[arg-type]
    opening = observation[:2]  # system prompt and question; older attempts are dropped
    critic = DEFAULT_CRITIC_PROMPT.format(
        steps="Step 1: 3 + 4 = 8\nStep 2: 8 * 2 = 16\nStep 3: So \\boxed{16}."
    )
    local = DEFAULT_LOCAL_PROMPT.format(
        step=2, wrong_step="8 * 2 = 16", kept_steps="Step 1: 3 + 4 = 8"
    )
    draft = {"role": "assistant", "content": DRAFT}
    assert llm.calls == [
        [[*opening, draft, {"role": "user", "content": critic}]],
        [[*opening, draft, {"role": "user", "content": local}]],
    ]
    assert action.text == "3 + 4 = 7\n7 * 2 = 14\n\\boxed{14}"
    assert (action.llm_calls, action.generated_tokens) == (2, 5 + 7)
    assert action.metadata["refinement"] == "local" and action.metadata["first_wrong_step"] == 2
    assert action.metadata["critic"] == "Step 1 adds wrongly.\nFirst incorrect step: 2"


def test_local_refinement_of_the_first_step_keeps_nothing():
    llm = ScriptedLLM("First incorrect step: 1")
    GLoRE(llm).act([later(DRAFT)])  # type: ignore[arg-type]
    assert llm.calls[1][0][-1]["content"] == DEFAULT_LOCAL_PROMPT.format(
        step=1, wrong_step="3 + 4 = 8", kept_steps="(none)"
    )


@pytest.mark.parametrize("reply", ["First incorrect step: none", "It all looks fine.", "Step 9"])
def test_global_refinement_when_the_critic_names_no_step(reply):
    llm = ScriptedLLM(reply)
    action = GLoRE(llm).act([later(DRAFT)])[0]  # type: ignore[arg-type]
    assert [len(batch) for batch in llm.calls] == [1, 1]
    assert llm.calls[1][0][-1]["content"] == DEFAULT_GLOBAL_PROMPT
    assert llm.calls[1][0][-2] == {"role": "assistant", "content": DRAFT}
    assert action.llm_calls == 2 and action.metadata["refinement"] == "global"
    assert action.metadata["first_wrong_step"] is None


def test_global_only_skips_the_critic_and_local_only_falls_back_to_the_last_step():
    llm = ScriptedLLM("First incorrect step: 2")
    action = GLoRE(llm, refinement="global").act([later(DRAFT)])[0]  # type: ignore[arg-type]
    assert len(llm.calls) == 1 and llm.calls[0][0][-1]["content"] == DEFAULT_GLOBAL_PROMPT
    assert (action.llm_calls, action.generated_tokens, action.metadata["critic"]) == (1, 7, None)
    llm = ScriptedLLM("First incorrect step: none")
    action = GLoRE(llm, refinement="local").act([later(DRAFT)])[0]  # type: ignore[arg-type]
    assert action.metadata["first_wrong_step"] == 3 and action.llm_calls == 2
    assert "goes wrong at step 3:\n\nSo \\boxed{16}." in llm.calls[1][0][-1]["content"]


def test_an_empty_answer_is_refined_globally_without_a_critic():
    llm = ScriptedLLM()
    action = GLoRE(llm).act([later("  \n")])[0]  # type: ignore[arg-type]
    assert len(llm.calls) == 1 and llm.calls[0][0][-1]["content"] == DEFAULT_GLOBAL_PROMPT
    assert action.llm_calls == 1 and action.metadata["refinement"] == "global"


def test_a_mixed_batch_makes_three_batched_calls():
    llm = ScriptedLLM("First incorrect step: 2")
    observations = [later(), later(DRAFT), later(""), later(DRAFT, DRAFT)]
    actions = GLoRE(llm, name="g").act(observations)  # type: ignore[arg-type]
    assert [len(batch) for batch in llm.calls] == [1, 2, 3]  # drafts, critics, refinements
    assert [a.llm_calls for a in actions] == [1, 2, 1, 2]  # type: ignore[union-attr]


def test_call_counts_in_an_episode_equal_self_refine():
    llm = ScriptedLLM("First incorrect step: 1")
    agent = GLoRE(llm)  # type: ignore[arg-type]
    records = rollout(
        "RISE-Arithmetic-v0",
        agent,
        num_episodes=2,
        env_kwargs={"difficulty": 1, "max_turns": 3},
        progress=False,
    )
    assert [[t.llm_calls for t in r.turns] for r in records] == [[1, 2, 2]] * 2
    assert [[t.generated_tokens for t in r.turns] for r in records] == [[3, 12, 12]] * 2
    assert average_llm_calls(records) == 5  # 1 + 2(k - 1), as self-refine
    assert records[0].turns[1].metadata["refinement"] == "local"


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("First incorrect step: 3", 3),
        ("The first wrong step is step 2.", 2),
        ("first erroneous step = #1", 1),
        ("2", 2),
        ("Step 3: the sum is wrong", 3),
        ("First incorrect step: none", None),
        ("First incorrect step: <number>", None),
        ("First incorrect step: 4", None),  # out of range
        ("First incorrect step: 0", None),
        ("I cannot tell.", None),
    ],
)
def test_parse_first_wrong_step(reply, expected):
    assert parse_first_wrong_step(reply, ["a", "b", "c"]) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"refinement": "both"}, "refinement must be one of"),
        ({"critic_prompt": "Find the error."}, "must contain {steps}"),
        ({"local_prompt": "Redo {line}."}, "local_prompt is not a valid template"),
        ({"global_prompt": "Rewrite {"}, "global_prompt is not a valid template"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GLoRE(ScriptedLLM(), **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir, torch_one_thread):
    from agents.llm import make_llm

    return make_llm(str(tiny_model_dir))


def test_runs_end_to_end_on_the_tiny_model(tiny_llm):
    agent = GLoRE(tiny_llm, SamplingParams(max_new_tokens=6))
    records = rollout(
        "RISE-Arithmetic-v0",
        agent,
        num_episodes=2,
        env_kwargs={"difficulty": 1, "max_turns": 3},
        progress=False,
    )
    for record in records:
        assert record.agent == "glore" and len(record.turns) == 3
        assert all(isinstance(t.response, str) and t.generated_tokens > 0 for t in record.turns)
        calls = [t.llm_calls for t in record.turns]
        refinements = [t.metadata["refinement"] for t in record.turns[1:]]
        # a critic for each non-empty answer; an empty one is refined globally in one call
        assert calls[0] == 1 and all(c in (1, 2) for c in calls[1:])
        assert all(r in ("local", "global") for r in refinements)


def test_the_leaderboard_fields_it_by_name():
    from agents.leaderboard import AGENT_KINDS, LeaderboardConfig, build_agent

    config = LeaderboardConfig(agents=("glore",), max_new_tokens=12, temperature=0.0)
    agent = build_agent("glore", ScriptedLLM(), config)  # type: ignore[arg-type]
    assert "glore" in AGENT_KINDS and isinstance(agent, GLoRE) and agent.name == "glore"
    assert agent.params.max_new_tokens == 12 and agent.refinement == "auto"
