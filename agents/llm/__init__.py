"""LLM back ends behind one interface: transformers, vLLM and OpenAI-compatible HTTP."""

from agents.llm.base import LLM, Completion, Generation, SamplingParams

__all__ = ["LLM", "Completion", "Generation", "SamplingParams"]
