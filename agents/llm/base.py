"""The one interface every LLM back end implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from rise_gym.errors import RiseGymError
from rise_gym.spaces import Conversation

DTYPES = ("auto", "float32", "bfloat16", "float16")
"""The weights' dtypes of the transformers and vllm back ends (``dtype=``)."""


def auto_dtype(device_type: str | None = None) -> str:
    """The dtype ``"auto"`` loads in the transformers back end on ``device_type``.

    bfloat16 on a GPU that supports it (else float16) and on a CPU that computes in it
    natively (AVX512-BF16 or AMX: about twice as fast as float32 there); float32 on
    other CPUs, where bfloat16 is emulated; float16 on other accelerators (MPS). None:
    the default device (CUDA if present).
    """
    import torch

    from rise_gym.doctor import cpu_has_native_bf16

    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device_type == "cpu":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return "float16"


class ModelNotFound(RiseGymError, FileNotFoundError):
    """A model name or path names no model that can be loaded here."""


class MissingDependency(RiseGymError, ImportError):
    """An optional package a back end needs is not installed."""


class ContextLengthExceeded(RiseGymError, ValueError):
    """A prompt plus the tokens to generate does not fit the model's context."""


class ServerError(RiseGymError, ConnectionError):
    """An LLM server was unreachable, kept failing after retries, or rejected a request."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample completions.

    Attributes:
        max_new_tokens: Most tokens generated per completion.
        temperature: 0.0 means greedy decoding.
        top_p: Nucleus-sampling mass (1.0 disables it).
        n: Completions per conversation.
        stop: Strings that end a completion (not included in the text).
        seed: Seed for sampling; None draws fresh randomness.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.n > 1 and self.temperature == 0:
            raise ValueError(
                f"n={self.n} greedy samples would be identical; set temperature > 0 (e.g. 0.7)"
            )


@dataclass
class Completion:
    """One generated completion.

    Attributes:
        text: The generated text (stop string excluded).
        num_tokens: Tokens generated.
        mean_logprob: Mean log-probability of the generated tokens, when the back end
            provides it.
        finish_reason: ``"stop"`` (end of sequence or stop string) or ``"length"``.
    """

    text: str
    num_tokens: int
    mean_logprob: float | None = None
    finish_reason: str = "stop"


@dataclass
class Generation:
    """The ``n`` completions produced for one conversation."""

    completions: list[Completion] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        """The completions' texts, in order."""
        return [completion.text for completion in self.completions]

    @property
    def num_tokens(self) -> int:
        """Tokens generated over all completions."""
        return sum(completion.num_tokens for completion in self.completions)


class LLM(ABC):
    """A language model that continues chat conversations in batches."""

    name: str = "llm"

    @abstractmethod
    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        *,
        adapter: str | None = None,
    ) -> list[Generation]:
        """Generate ``params.n`` completions for each conversation in one batched call.

        Args:
            conversations: Chat conversations; each ends with a user message.
            params: Sampling parameters.
            adapter: Path of a PEFT LoRA adapter to apply, if the back end supports it.

        Returns:
            One `Generation` per conversation, in order.
        """

    def close(self) -> None:  # noqa: B027  (optional hook, not abstract)
        """Release resources (GPU memory, connections); the default does nothing."""


def check_context_length(
    prompt_lengths: Sequence[int], max_new_tokens: int, context_size: int
) -> None:
    """Raise `ContextLengthExceeded` if a prompt plus ``max_new_tokens`` overflows the context.

    Args:
        prompt_lengths: Tokens in each prompt (chat template applied).
        max_new_tokens: Tokens to be generated after each prompt.
        context_size: The model's context, in tokens.

    Example:
        >>> check_context_length([10, 20], max_new_tokens=8, context_size=32)
        >>> check_context_length([10, 30], max_new_tokens=8, context_size=32)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        agents.llm.base.ContextLengthExceeded: conversation 1 has 30 prompt tokens; ...
    """
    for index, length in enumerate(prompt_lengths):
        if length + max_new_tokens > context_size:
            raise ContextLengthExceeded(
                f"conversation {index} has {length} prompt tokens; with "
                f"max_new_tokens={max_new_tokens} that is {length + max_new_tokens} tokens, "
                f"more than the model's context of {context_size} tokens. Keep fewer earlier "
                "turns in the conversation (e.g. a smaller history_window) or lower "
                "max_new_tokens."
            )
