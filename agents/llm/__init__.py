"""LLM back ends behind one interface: transformers, vLLM and OpenAI-compatible HTTP.

`make_llm` builds any of them. The back-end classes are imported on first use, so
``import agents.llm`` loads neither torch nor transformers.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from agents.llm.base import (
    LLM,
    Completion,
    ContextLengthExceeded,
    Generation,
    MissingDependency,
    ModelNotFound,
    SamplingParams,
    ServerError,
)
from agents.llm.default_model import DEFAULT_MODEL, default_model_path, resolve_model
from agents.llm.factory import BACKENDS, AdaptedLLM, make_llm

if TYPE_CHECKING:
    from agents.llm.openai_backend import OpenAICompatibleLLM
    from agents.llm.transformers_backend import TransformersLLM
    from agents.llm.vllm_backend import VllmLLM

_LAZY = {
    "TransformersLLM": "agents.llm.transformers_backend",
    "VllmLLM": "agents.llm.vllm_backend",
    "OpenAICompatibleLLM": "agents.llm.openai_backend",
}

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "LLM",
    "AdaptedLLM",
    "Completion",
    "ContextLengthExceeded",
    "Generation",
    "MissingDependency",
    "ModelNotFound",
    "OpenAICompatibleLLM",
    "SamplingParams",
    "ServerError",
    "TransformersLLM",
    "VllmLLM",
    "default_model_path",
    "make_llm",
    "resolve_model",
]


def __getattr__(name: str) -> Any:
    """Import a back-end class the first time it is asked for."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
