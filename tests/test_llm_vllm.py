"""The vLLM back end: a clear error without vllm; on a GPU, the default model end to end."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from markers import require_gpu, require_vllm

from agents.llm import LLM, ContextLengthExceeded, MissingDependency, SamplingParams, make_llm

CHAT = [{"role": "user", "content": "What is 2+3?"}]


def test_missing_vllm_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm now raises ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'rise-gym\[vllm\]'"):
        make_llm(backend="vllm")


@pytest.fixture(scope="module")
def vllm_llm(default_model_dir: Path) -> Iterator[LLM]:
    llm = make_llm(backend="vllm", gpu_memory_utilization=0.3, max_model_len=2048)
    yield llm
    llm.close()


@require_gpu
@require_vllm
def test_vllm_greedy_samples_and_stops(vllm_llm: LLM) -> None:
    [greedy] = vllm_llm.generate([CHAT], SamplingParams(max_new_tokens=32))
    completion = greedy.completions[0]
    assert "5" in completion.text and completion.finish_reason == "stop"
    assert 0 < completion.num_tokens < 32 and completion.mean_logprob < 0
    sampled = SamplingParams(max_new_tokens=16, temperature=1.0, n=3, seed=3)
    first = vllm_llm.generate([CHAT, CHAT], sampled)
    assert [len(generation.texts) for generation in first] == [3, 3]
    assert vllm_llm.generate([CHAT, CHAT], sampled)[0].texts == first[0].texts
    [stopped] = vllm_llm.generate([CHAT], SamplingParams(max_new_tokens=32, stop=("=",)))
    assert "=" not in stopped.texts[0] and stopped.texts[0]


@require_gpu
@require_vllm
def test_vllm_lora_adapter_changes_output(
    vllm_llm: LLM, default_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(default_model_dir), config)
    model.save_pretrained(tmp_path / "adapter")
    params = SamplingParams(max_new_tokens=24)
    base = vllm_llm.generate([CHAT], params)[0].texts
    adapted = vllm_llm.generate([CHAT], params, adapter=str(tmp_path / "adapter"))[0].texts
    assert adapted != base
    assert vllm_llm.generate([CHAT], params)[0].texts == base


@require_gpu
@require_vllm
def test_vllm_context_overflow_is_a_clear_error(vllm_llm: LLM) -> None:
    long_chat = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(ContextLengthExceeded, match="2048 tokens.*history_window"):
        vllm_llm.generate([long_chat], SamplingParams(max_new_tokens=16))
