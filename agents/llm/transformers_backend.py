"""The transformers back end: batched chat generation on CPU or GPU, with PEFT adapters."""

from __future__ import annotations

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
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from agents.llm.base import (
    LLM,
    Completion,
    Generation,
    ModelNotFound,
    SamplingParams,
    check_context_length,
)
from agents.llm.default_model import resolve_adapter, resolve_model
from rise_gym.spaces import Conversation


class TransformersLLM(LLM):
    """A Hugging Face causal LM behind the `LLM` interface.

    Conversations are rendered with the tokenizer's chat template, left-padded and
    generated in one batch (or in chunks of ``max_batch_size``); padding does not change
    greedy results. The model's own sampling defaults (``generation_config.json``) are
    ignored: `SamplingParams` alone decides how tokens are chosen, as on the other back
    ends. ``mean_logprob`` is measured under the model's raw distribution (before
    temperature and top-p). The same seed, conversations and batching give the same
    samples.

    Attributes:
        model: The loaded ``transformers`` model (PEFT layers are injected in place once
            an adapter is used).
        tokenizer: Its tokenizer, padding on the left.
        device: Where the model runs.
        context_size: The model's context, in tokens.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        dtype: str = "auto",
        max_batch_size: int | None = None,
    ):
        """Load a model.

        Args:
            model: None for the offline default model (SmolLM2-135M-Instruct), a local
                model folder, or a Hugging Face hub id; see `resolve_model`.
            device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; None picks CUDA when present.
            dtype: ``"auto"`` (float32 on CPU; bfloat16 on a GPU that supports it, else
                float16) or a torch dtype name such as ``"float16"``.
            max_batch_size: Most conversations per ``generate`` call (None: all at once).

        Raises:
            ModelNotFound: the model cannot be found or loaded.
        """
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
        path = resolve_model(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = _load(AutoTokenizer, path, padding_side="left")
        torch_dtype = _torch_dtype(dtype, self.device)
        self.model = _load(AutoModelForCausalLM, path, dtype=torch_dtype, device_map=self.device)
        self.model.eval()
        self._eos_token_ids = _eos_token_ids(self.model.generation_config, self.tokenizer)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self._eos_token_ids[0]
        self.model.generation_config = GenerationConfig()  # only SamplingParams decide
        self.context_size = _context_size(self.model.config, self.tokenizer)
        self.max_batch_size = max_batch_size
        self.name = Path(path).name
        self._adapters = _AdapterCache(self.model)

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
        batch = self.tokenizer.pad({"input_ids": prompts}, return_tensors="pt").to(self.device)
        logprobs = _TokenLogprobs()
        processors = LogitsProcessorList([logprobs, *_warpers(params)])
        prompt_length = batch["input_ids"].shape[1]
        stop = _StopStrings(self.tokenizer, params.stop, prompt_length) if params.stop else None
        # top_k=0 turns off transformers' default top-k of 50; temperature and top-p are
        # applied by _warpers, after the log-probabilities are read.
        sampling = {"do_sample": True, "top_k": 0} if params.temperature > 0 else {}
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=params.n,
            eos_token_id=self._eos_token_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            **sampling,
        )
        sequences = self.model.generate(
            **batch,
            generation_config=config,
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([stop] if stop else []),
        )
        generated = sequences[:, prompt_length:]
        token_logprobs = logprobs.gather(generated)
        stop_ends = stop.ends if stop else {}
        completions = [
            self._completion(generated[row], token_logprobs[row], stop_ends.get(row, 0), params)
            for row in range(generated.shape[0])
        ]
        return [
            Generation(completions[index : index + params.n])
            for index in range(0, len(completions), params.n)
        ]

    def _completion(
        self, tokens: torch.Tensor, logprobs: torch.Tensor, stop_end: int, params: SamplingParams
    ) -> Completion:
        """One row of output: cut at its end of sequence or stop string, then decoded."""
        is_eos = torch.isin(tokens, torch.tensor(self._eos_token_ids, device=tokens.device))
        length = int(is_eos.int().argmax()) + 1 if bool(is_eos.any()) else len(tokens)
        if stop_end:
            length = min(length, stop_end)
        text = self.tokenizer.decode(tokens[:length], skip_special_tokens=True)
        text, stopped = _cut_at_stop(text, params.stop)
        stopped = stopped or bool(stop_end) or bool(is_eos[length - 1])
        return Completion(
            text=text,
            num_tokens=length,
            mean_logprob=float(logprobs[:length].mean()),
            finish_reason="stop" if stopped else "length",
        )


def chat_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Conversation]
) -> list[list[int]]:
    """Token ids of each conversation rendered by the chat template, ready for the reply.

    Raises:
        ValueError: the tokenizer has no chat template.
    """
    if not conversations:
        return []
    if tokenizer.chat_template is None:
        raise ValueError(
            f"the tokenizer of {tokenizer.name_or_path!r} has no chat template; use an "
            "instruct (chat) model, or set tokenizer.chat_template"
        )
    texts = tokenizer.apply_chat_template(
        [list(conversation) for conversation in conversations],
        tokenize=False,
        add_generation_prompt=True,
    )
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


class _AdapterCache:
    """PEFT adapters loaded into one model, each read once per folder and version."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.peft_model: Any = None
        self.names: dict[str, tuple[str, int]] = {}  # folder -> (adapter name, weights mtime)

    def use(self, adapter: str | None) -> AbstractContextManager[Any]:
        """A context in which ``adapter`` (None: no adapter) is the active one."""
        if adapter is None:
            return self.peft_model.disable_adapter() if self.peft_model else nullcontext()
        name = self._load(adapter)
        self.peft_model.set_adapter(name)
        return nullcontext()

    def _load(self, adapter: str) -> str:
        folder, version = resolve_adapter(adapter)
        cached = self.names.get(str(folder))
        if cached and cached[1] == version:
            return cached[0]
        name = f"adapter_{len(self.names)}_{version}"
        if self.peft_model is None:
            from peft import PeftModel

            self.peft_model = PeftModel.from_pretrained(self.model, folder, adapter_name=name)
        else:
            self.peft_model.load_adapter(folder, adapter_name=name)
        if cached:  # the folder was overwritten: drop the stale weights
            self.peft_model.delete_adapter(cached[0])
        self.names[str(folder)] = (name, version)
        return name


class _TokenLogprobs(LogitsProcessor):
    """Reads each chosen token's log-probability; goes first, before any warper."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []
        self.last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.last is not None:  # the token chosen at the previous step is now in input_ids
            self.steps.append(self.last.gather(1, input_ids[:, -1:]).squeeze(1))
        self.last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def gather(self, generated: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the generated tokens, shape (rows, tokens)."""
        steps = self.steps[: generated.shape[1]]
        if len(steps) < generated.shape[1] and self.last is not None:
            steps.append(self.last.gather(1, generated[:, -1:]).squeeze(1))
        return torch.stack(steps, dim=1)


class _StopStrings(StoppingCriteria):
    """Stops rows on stop strings and remembers where each row first stopped."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str], prompt_length: int):
        self.criteria = StopStringCriteria(tokenizer, list(stop))
        self.prompt_length = prompt_length
        self.ends: dict[int, int] = {}  # row -> tokens generated when it first stopped

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        done = self.criteria(input_ids, scores)
        for row in done.nonzero().flatten().tolist():
            self.ends.setdefault(row, input_ids.shape[1] - self.prompt_length)
        return done


def _warpers(params: SamplingParams) -> list[LogitsProcessor]:
    if params.temperature == 0:
        return []
    warpers: list[LogitsProcessor] = [TemperatureLogitsWarper(params.temperature)]
    if params.top_p < 1:
        warpers.append(TopPLogitsWarper(params.top_p))
    return warpers


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
    except OSError as error:
        reason = str(error).rstrip(".")
        raise ModelNotFound(
            f"could not load model {path!r}: {reason}. Pass a local model folder, a hub id "
            "you can download (online), or None for the offline default model."
        ) from error


def _torch_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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
