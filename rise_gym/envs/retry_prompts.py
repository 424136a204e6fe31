"""Retry prompts beyond the default: paraphrases for out-of-distribution evaluation.

A RISE model is trained with one fixed retry prompt (`DEFAULT_RETRY_PROMPT`). Whether
what it learned is tied to that wording is tested by evaluating it with prompts it never
saw in training (the RISE rebuttal's Table 2): pass one of these as
``gym.make(env_id, retry_prompt=...)``. Every prompt restates the question
(``{question}``), as the default does.
"""

from __future__ import annotations

from rise_gym.envs.base import DEFAULT_RETRY_PROMPT

OOD_RETRY_PROMPTS: dict[str, str] = {
    "terse": "That is wrong. Try again.\n\n{question}",
    "reconsider": (
        "I don't think that is right. Please reconsider the problem carefully and give a "
        "new answer.\n\n{question}"
    ),
    "checker": (
        "An automatic checker marked your last answer as incorrect. Work through the "
        "question again from the start.\n\n{question}"
    ),
}
"""Paraphrases of the default retry prompt, by name, none of them used in training."""

RETRY_PROMPTS: dict[str, str] = {"default": DEFAULT_RETRY_PROMPT, **OOD_RETRY_PROMPTS}
"""The default retry prompt and every paraphrase, by name."""
