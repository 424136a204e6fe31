"""The transformers back end: batched chat generation on CPU or GPU, with PEFT adapters."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerBase,
)

from agents.llm._decoding import Decoded, PrefixCache, decode
from agents.llm.base import (
    DTYPES,
    LLM,
    Completion,
    Generation,
    ModelNotFound,
    SamplingParams,
    auto_dtype,
    check_context_length,
)
from agents.llm.chat import chat_prompt_ids
from agents.llm.default_model import resolve_adapter, resolve_model
from rise_gym.spaces import Conversation


class TransformersLLM(LLM):
    """A Hugging Face causal LM behind the `LLM` interface.

    Conversations are rendered with the tokenizer's chat template, left-padded and
    generated in one batch (or in chunks of ``max_batch_size``); padding does not change
    greedy results. Rows leave the batch as they finish, and the keys and values of
    finished rows are kept (up to ``prefix_cache_bytes``), so the next turn of a
    conversation computes only its new tokens (see `agents.llm._decoding`). The model's
    own sampling defaults (``generation_config.json``) are ignored: `SamplingParams`
    alone decides how tokens are chosen, as on the other back ends. ``mean_logprob`` is
    measured under the model's raw distribution (before temperature and top-p). The same
    seed, conversations and batching give the same samples.

    Attributes:
        model: The loaded ``transformers`` model (PEFT layers are injected in place once
            an adapter is used).
        tokenizer: Its tokenizer, padding on the left.
        device: Where the model runs.
        context_size: The model's context, in tokens.
        prefix_cache: Keys and values of recent sequences, reused by later prompts that
            extend them; None when disabled.
    """

    prefix_cache: PrefixCache | None

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        dtype: str = "auto",
        max_batch_size: int | None = None,
        prefix_cache_bytes: int = 1 << 30,
        merge_adapters: bool | None = None,
    ):
        """Load a model.

        Args:
            model: None for the offline default model (SmolLM2-135M-Instruct), a local
                model folder, or a Hugging Face hub id; see `resolve_model`.
            device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; None picks CUDA when present:
                the GPU of this process's ``LOCAL_RANK`` under a multi-process launch
                (accelerate, torchrun), else the first.
            dtype: ``"auto"`` (`auto_dtype`: bfloat16 on a GPU that supports it, else
                float16; on a CPU, bfloat16 where it is native (AVX512-BF16 or AMX:
                about 2.2 times faster than float32, ``benchmarks/rollout.py --bf16``,
                with slightly different answers), else float32), ``"float32"``,
                ``"bfloat16"`` or ``"float16"``.
            max_batch_size: Most conversations per ``generate`` call (None: all at once).
            prefix_cache_bytes: Memory (on ``device``) for the keys and values of recent
                sequences, reused when a later prompt extends one; 0 disables reuse.
            merge_adapters: Add the active LoRA adapter into the base weights while it
                is in use, so adapted generation runs at the base model's speed. None:
                only for float32 weights, where merging and unmerging are exact to
                about 1e-7 (in 16-bit weights each unmerge would leave rounding error).

        Raises:
            ModelNotFound: the model cannot be found or loaded.
        """
        _check_sizes(max_batch_size, prefix_cache_bytes)
        path = resolve_model(model)
        self.device = torch.device(device or _default_device())
        torch_dtype = _torch_dtype(dtype, self.device)
        tokenizer = _load(AutoTokenizer, path, padding_side="left")
        loaded = _load(AutoModelForCausalLM, path, dtype=torch_dtype, device_map=self.device)
        loaded.eval()
        self._attach(loaded, tokenizer, max_batch_size, prefix_cache_bytes)
        loaded.generation_config = GenerationConfig()  # only SamplingParams decide
        self.name = Path(path).name
        merge = torch_dtype == torch.float32 if merge_adapters is None else merge_adapters
        self._adapters = _AdapterCache(self.model, merge=merge)

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str | None = None,
        max_batch_size: int | None = None,
        prefix_cache_bytes: int = 1 << 30,
    ) -> TransformersLLM:
        """Serve an already-loaded model, e.g. a policy being trained, without copying it.

        The model is used as it is, on its own device: with PEFT layers, the active
        adapter answers calls that name none (adapters are never merged, so training
        can go on). The caller owns the weights: after changing them in place, call
        `clear_prefix_cache`, or later prompts may reuse keys and values of the old
        weights. Put the model in eval mode for generation (dropout stays on otherwise).

        Args:
            model: A causal LM (or a PEFT model wrapping one).
            tokenizer: Its tokenizer, with a chat template.
            name: The back end's name (default: the model's ``name_or_path`` folder name).
            max_batch_size: Most conversations per ``generate`` call (None: all at once).
            prefix_cache_bytes: Memory for the keys and values of recent sequences; 0
                disables reuse.

        Returns:
            A back end sharing ``model`` and ``tokenizer``.
        """
        _check_sizes(max_batch_size, prefix_cache_bytes)
        llm = cls.__new__(cls)
        llm.device = next(model.parameters()).device
        llm._attach(model, tokenizer, max_batch_size, prefix_cache_bytes)
        llm.name = name or Path(str(getattr(model, "name_or_path", "model"))).name
        llm._adapters = _AdapterCache(model, merge=False)
        return llm

    @property
    def eos_token_ids(self) -> list[int]:
        """The tokens that end a response (the model's and the tokenizer's EOS)."""
        return list(self._eos_token_ids)

    def clear_prefix_cache(self) -> None:
        """Forget every cached key and value: call it after changing the weights in place."""
        if self.prefix_cache is not None:
            self.prefix_cache = PrefixCache(self.prefix_cache.max_bytes)

    def _attach(
        self,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        max_batch_size: int | None,
        prefix_cache_bytes: int,
    ) -> None:
        """Set the attributes every back end has from its model and tokenizer."""
        self.model: Any = model
        self.tokenizer: Any = tokenizer
        self._eos_token_ids = _eos_token_ids(model.generation_config, tokenizer)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token_id = self._eos_token_ids[0]
        self.context_size = _context_size(model.config, tokenizer)
        self.max_batch_size = max_batch_size
        self.prefix_cache = PrefixCache(prefix_cache_bytes) if prefix_cache_bytes else None

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
            adapter: Folder of a PEFT adapter (loaded once, then cached); None uses the
                base model.

        Returns:
            One `Generation` per conversation, in order.

        Raises:
            ContextLengthExceeded: a prompt plus ``params.max_new_tokens`` overflows the
                model's context.
            ModelNotFound: ``adapter`` is not a PEFT adapter folder.
        """
        prompts = chat_prompt_ids(self.tokenizer, conversations)
        lengths = [len(ids) for ids in prompts]
        check_context_length(lengths, params.max_new_tokens, self.context_size)
        chunk = self.max_batch_size or max(len(prompts), 1)
        with self._adapters.use(adapter), _seeded(params.seed, self.device), torch.inference_mode():
            return [
                generation
                for start in range(0, len(prompts), chunk)
                for generation in self._generate_batch(prompts[start : start + chunk], params)
            ]

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        rows = decode(
            self.model,
            self.tokenizer,
            prompts,
            params,
            eos_token_ids=self._eos_token_ids,
            cache=self.prefix_cache,
            adapter=self._adapters.active,
        )
        completions = [self._completion(row, params) for row in rows]
        return [
            Generation(completions[index : index + params.n])
            for index in range(0, len(completions), params.n)
        ]

    def _completion(self, row: Decoded, params: SamplingParams) -> Completion:
        """One row of output, decoded and cut at its earliest stop string."""
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        text, cut = _cut_at_stop(text, params.stop)
        return Completion(
            text=text,
            num_tokens=len(row.tokens),
            mean_logprob=sum(row.logprobs) / len(row.logprobs),
            finish_reason="stop" if row.stopped or cut else "length",
        )


class _AdapterCache:
    """PEFT adapters loaded into one model, each read once per folder and version.

    With ``merge=True`` the active adapter's LoRA weights are added into the base
    weights while it is in use (and subtracted again before another adapter or the base
    model runs), so an adapted model decodes as fast as the base model instead of
    computing every LoRA product on the side.
    """

    def __init__(self, model: torch.nn.Module, *, merge: bool):
        self.model = model
        self.merge = merge
        self.peft_model: Any = None
        self.names: dict[str, tuple[str, int]] = {}  # folder -> (adapter name, weights mtime)
        self.active: str | None = None  # the active adapter's name (unique per version)
        self.merged: str | None = None  # the adapter whose weights are in the base weights

    def use(self, adapter: str | None) -> AbstractContextManager[Any]:
        """A context in which ``adapter`` (None: no adapter) is the active one."""
        if adapter is None:
            self.active = None
            self._unmerge()
            return self.peft_model.disable_adapter() if self.peft_model else nullcontext()
        name = self._load(adapter)
        if name != self.merged:
            self._unmerge()
            self.peft_model.set_adapter(name)
            if self.merge:
                self.peft_model.merge_adapter([name])
                self.merged = name
        self.active = name
        return nullcontext()

    def _unmerge(self) -> None:
        if self.merged is not None:
            self.peft_model.unmerge_adapter()
            self.merged = None

    def _load(self, adapter: str) -> str:
        folder, version = resolve_adapter(adapter)
        cached = self.names.get(str(folder))
        if cached and cached[1] == version:
            return cached[0]
        name = f"adapter_{len(self.names)}_{version}"
        try:
            if self.peft_model is None:
                from peft import PeftModel

                self.peft_model = PeftModel.from_pretrained(self.model, folder, adapter_name=name)
            else:
                self._unmerge()  # peft loads adapters into unmerged layers only
                self.peft_model.load_adapter(folder, adapter_name=name)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise ModelNotFound(
                f"could not load adapter {str(folder)!r}: {_first_line(error)}. Pass an adapter "
                "that save_pretrained wrote for this base model."
            ) from error
        if cached:  # the folder was overwritten: drop the stale weights
            self.peft_model.delete_adapter(cached[0])
        self.names[str(folder)] = (name, version)
        return name


def _check_sizes(max_batch_size: int | None, prefix_cache_bytes: int) -> None:
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
    if prefix_cache_bytes < 0:
        raise ValueError(f"prefix_cache_bytes must be >= 0, got {prefix_cache_bytes}")


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to its earliest stop string, and whether one was found."""
    positions = [text.find(string) for string in stop if string in text]
    return (text[: min(positions)], True) if positions else (text, False)


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's generators inside the block and restore them after it."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def _load(auto_class: Any, path: str, **kwargs: Any) -> Any:
    try:
        return auto_class.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as error:
        reason = _first_line(error).rstrip(".")
        raise ModelNotFound(
            f"could not load model {path!r}: {reason}. Pass a local model folder, a hub id "
            "you can download (online), or None for the offline default model."
        ) from error


def _first_line(error: BaseException) -> str:
    """The first line of an error's message (libraries append long advice)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _default_device() -> str:
    """CUDA when present (the launcher's ``LOCAL_RANK`` picks the GPU), else the CPU."""
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"


def _torch_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return getattr(torch, auto_dtype(device.type) if dtype == "auto" else dtype)


def _eos_token_ids(
    generation_config: GenerationConfig, tokenizer: PreTrainedTokenizerBase
) -> list[int]:
    configured = generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [*ids, tokenizer.eos_token_id]
    return list(dict.fromkeys(id_ for id_ in ids if id_ is not None))


def _context_size(config: Any, tokenizer: PreTrainedTokenizerBase) -> int:
    """The smallest context the config or tokenizer declares (tokenizers often say 1e30)."""
    declared = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    return min((size for size in declared if size and size < 10**8), default=sys.maxsize)
