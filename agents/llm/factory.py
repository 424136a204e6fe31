"""`make_llm`: one entry point that builds any back end by name."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents.llm.base import DTYPES, LLM, Generation, MissingDependency, SamplingParams
from rise_gym.spaces import Conversation

BACKENDS = ("transformers", "vllm", "openai")
"""The back end names `make_llm` accepts."""

BACKEND_PACKAGES = {"transformers": ("torch", "transformers"), "vllm": ("vllm",), "openai": ()}
"""The optional packages each back end imports."""

_EXTRAS = {
    "torch": "llm",
    "transformers": "llm",
    "peft": "llm",
    "matplotlib": "llm",
    "vllm": "vllm",
    "stable_baselines3": "sb3",
    "ray": "ray",
}
"""The rise-gym extra that installs each optional package."""


def require(*packages: str, purpose: str) -> None:
    """Check that optional packages are installed, without importing them.

    Args:
        packages: Module names, keys of ``_EXTRAS`` (``"matplotlib"``, ``"vllm"``, ...).
        purpose: What needs them, e.g. ``"the leaderboard's plot"``.

    Raises:
        MissingDependency: a package is missing; the message names the extra to install.
    """
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        extras = ",".join(sorted({_EXTRAS[name] for name in missing}))
        names = ", ".join(name.replace("_", "-") for name in missing)
        raise MissingDependency(
            f"{purpose} needs {names}, not installed here; install it with "
            f"`pip install 'rise-gym[{extras}]'`"
        )


def make_llm(
    model: str | None = None,
    *,
    backend: str = "transformers",
    adapter: str | None = None,
    base_url: str | None = None,
    dtype: str = "auto",
    **options: Any,
) -> LLM:
    """Build an LLM back end.

    Args:
        model: None for the offline default model (SmolLM2-135M-Instruct; for
            ``"openai"``, the server's first model), a local model folder, or a Hugging
            Face hub id; for ``"openai"``, the name the server serves.
        backend: ``"transformers"`` (CPU or GPU), ``"vllm"`` (GPU, optional extra) or
            ``"openai"`` (any OpenAI-compatible server).
        adapter: A PEFT adapter used by every call that names none (for ``"openai"``,
            the name the server serves it under); None: the base model.
        base_url: The server's API root, for ``"openai"`` only (default
            ``http://localhost:8000/v1``).
        dtype: The weights' dtype, one of `DTYPES`: ``"auto"`` (transformers:
            `auto_dtype`, 16-bit on GPU and on a CPU with AVX512-BF16 or AMX, where
            bfloat16 runs about 2x faster than float32, else float32; vLLM: its own
            choice) or a name. Only ``"auto"`` for ``"openai"`` (the server decides).
        **options: Passed on to the back end's constructor (`TransformersLLM`,
            `VllmLLM` or `OpenAICompatibleLLM`), e.g. ``device="cpu"``.

    Returns:
        The back end, wrapped so that ``adapter`` is the default when one is given.

    Raises:
        ValueError: an unknown ``backend`` or ``dtype``, ``base_url`` without
            ``"openai"``, or a ``dtype`` with it.
        ModelNotFound: the model cannot be found.
        MissingDependency: the back end's optional package is not installed.

    Example:
        >>> llm = make_llm(max_batch_size=16)  # doctest: +SKIP
        >>> chat = [{"role": "user", "content": "What is 2+3?"}]
        >>> llm.generate([chat], SamplingParams(max_new_tokens=16))[0].texts  # doctest: +SKIP
        ['2 + 3 = 5']
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if base_url is not None and backend != "openai":
        raise ValueError(f"base_url is for backend='openai' only, not {backend!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "auto" and backend == "openai":
        raise ValueError(
            f"dtype={dtype!r} needs the weights; with backend='openai' the server decides "
            "(leave dtype at 'auto')"
        )
    require(*BACKEND_PACKAGES[backend], purpose=f"the {backend} back end")
    llm: LLM
    if backend == "transformers":
        from agents.llm.transformers_backend import TransformersLLM

        llm = TransformersLLM(model, dtype=dtype, **options)
    elif backend == "vllm":
        from agents.llm.vllm_backend import VllmLLM

        llm = VllmLLM(model, dtype=dtype, **options)
    else:
        from agents.llm.openai_backend import DEFAULT_BASE_URL, OpenAICompatibleLLM

        llm = OpenAICompatibleLLM(model, base_url=base_url or DEFAULT_BASE_URL, **options)
    return llm if adapter is None else AdaptedLLM(llm, adapter)


class AdaptedLLM(LLM):
    """A back end whose calls use a given adapter unless they name another one.

    Attributes:
        llm: The wrapped back end.
        adapter: The adapter used by calls with ``adapter=None``.
    """

    def __init__(self, llm: LLM, adapter: str):
        """Wrap ``llm`` so that ``adapter`` is its default adapter."""
        self.llm = llm
        self.adapter = adapter
        self.name = f"{llm.name}+{Path(adapter).name}"

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        *,
        adapter: str | None = None,
    ) -> list[Generation]:
        """Generate with ``adapter``, or with the default adapter when it is None."""
        return self.llm.generate(conversations, params, adapter=adapter or self.adapter)

    def close(self) -> None:
        """Close the wrapped back end."""
        self.llm.close()


class LazyLLM(LLM):
    """A back end built on its first generation (or `load`), so a resumed run may load none."""

    def __init__(self, build: Callable[[], LLM]):
        """Remember how to build the real back end."""
        self._build = build
        self._llm: LLM | None = None

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        *,
        adapter: str | None = None,
    ) -> list[Generation]:
        """Build the back end if needed, then generate with it."""
        return self.load().generate(conversations, params, adapter=adapter)

    def load(self) -> LLM:
        """The real back end, built on the first call."""
        if self._llm is None:
            self._llm = self._build()
        return self._llm

    def close(self) -> None:
        """Close the back end if it was built."""
        if self._llm is not None:
            self._llm.close()
