"""Reward-weighted regression (RWR): the weighted loss and a `transformers.Trainer` for it.

RWR maximises ``sum_i w_i * log pi(a_i | s_i)`` with ``w_i = exp(r_i / tau)``. As in the
RISE reference code, each example contributes its weight times the mean negative
log-likelihood of its target tokens, and the loss of one optimizer step divides the
sum of these contributions by a constant, the step's configured number of examples::

    loss = sum_i w_i * mean_{t in target_i} nll_it  /  (per_device_batch_size
           x gradient_accumulation_steps x processes)

The denominator never depends on the weights (or lengths) of the examples that happen
to share a step. Hence:

* an example pushes the model with a force proportional to its weight, whatever else
  shares its batch: a batch of wrong answers (weight ``exp(0)``) pushes 12.2 times less
  than a batch of corrections (``exp(1 / 0.4)``), and length-grouped batches of
  mostly-wrong later-turn states cannot undo the weighting. (Dividing by the step's
  sum of weights, as transformers' token mean would, makes every step push equally.)
* splitting a step into micro-batches or devices changes nothing: every micro-batch
  divides by the configured micro-batch size times the accumulation steps, and
  data-parallel training averages over processes; a short last step (fewer examples or
  fewer micro-batches) simply has fewer terms, it is not scaled up;
* equal weights of 1 give the mean over examples of each example's mean token NLL, a
  standard SFT loss (each response counts once, whatever its length);
* scaling all weights scales the loss: `rwr_weight` subtracts a baseline reward so a
  correct action weighs 1, which keeps the loss and its gradient norm (clipping) on the
  scale of SFT; only the ratios ``exp((r_i - r_j) / tau)`` are the method.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer

from agents.rise.examples import IGNORE_INDEX


def rwr_weight(reward: float, tau: float = 0.4, baseline: float = 1.0) -> float:
    """The RWR weight ``exp((reward - baseline) / tau)`` of an action with this reward.

    This is the paper's ``exp(reward / tau)`` times the constant ``exp(-baseline / tau)``:
    the same ratios between actions, with a correct action (reward 1) weighing 1.

    Args:
        reward: The action's reward (1.0 correct, 0.0 wrong in rise-gym).
        tau: The temperature; smaller values favour high rewards more sharply.
        baseline: The reward whose weight is 1.

    Returns:
        The weight, > 0.

    Example:
        >>> rwr_weight(1.0), round(rwr_weight(1.0) / rwr_weight(0.0), 2)
        (1.0, 12.18)
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}; the RISE reference code uses 0.4")
    return math.exp((reward - baseline) / tau)


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sequence's mean negative log-likelihood over its target tokens.

    Args:
        logits: ``(batch, kept, vocab)`` logits of the last ``kept`` positions of the
            sequences (``kept`` may be the full length).
        labels: ``(batch, length)`` token ids, ``IGNORE_INDEX`` where not a target.

    Returns:
        ``(batch,)`` float32 mean target-token NLLs (0 for a row without targets).
    """
    kept = logits.shape[1]
    targets = labels[:, labels.shape[1] - kept + 1 :]
    mask = targets.ne(IGNORE_INDEX)
    nll = torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)
    nll[mask] = F.cross_entropy(logits[:, :-1][mask].float(), targets[mask], reduction="none")
    return nll.sum(dim=1) / mask.sum(dim=1).clamp(min=1)


class RWRTrainer(Trainer):
    """A `transformers.Trainer` whose loss is RWR's weighted NLL on target tokens.

    Batches come from `agents.rise.examples.RWRCollator` (``input_ids``,
    ``attention_mask``, ``labels``, ``weights``); the training arguments must set
    ``remove_unused_columns=False`` so the ``weights`` survive. The normalisation is
    described in this module's docstring.
    """

    # compute_loss divides by the accumulation steps itself (by the configured number,
    # also on a short last step), so training_step must not divide again.
    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, **kwargs: Any):
        """Create the trainer; takes `transformers.Trainer`'s arguments."""
        super().__init__(*args, **kwargs)
        if self.args.remove_unused_columns:
            raise ValueError(
                "RWRTrainer needs the 'weights' column: pass "
                "TrainingArguments(remove_unused_columns=False)"
            )
        # The loss is computed here, never by the model.
        self.model_accepts_loss_kwargs = False

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The RWR loss of one micro-batch: ``sum_i w_i * mean NLL_i / examples per step``.

        In training the examples per step are the configured ones per device
        (``per_device_train_batch_size x gradient_accumulation_steps``: a constant, so a
        short last step is not scaled up); in evaluation, the batch's own size. Only the
        logits from the first target position on are computed (the ``logits_to_keep``
        argument of transformers' causal LMs), so returned outputs hold logits for the
        last positions only.

        Args:
            model: The (possibly wrapped) causal LM.
            inputs: A batch from `RWRCollator`.
            return_outputs: Also return the model outputs.
            num_items_in_batch: Ignored: the denominator does not depend on the batch.

        Returns:
            The loss, and the model outputs if ``return_outputs``.
        """
        labels, weights = inputs["labels"], inputs["weights"]
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            logits_to_keep=_logits_to_keep(labels),
        )
        weighted = (weights.float() * sequence_nll(outputs.logits, labels)).sum()
        if model.training:
            size = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
        else:
            size = len(weights)
        loss = weighted / size
        return (loss, outputs) if return_outputs else loss


def _logits_to_keep(labels: torch.Tensor) -> torch.Tensor:
    """The positions that need logits: from the one before the first target on.

    An index tensor rather than a count: a count slices a non-contiguous view of the
    hidden states, which torch multiplies by frozen weights (LoRA's lm_head) as a batch
    of copies of the vocabulary projection, about 3x slower forward and backward.
    """
    is_target = labels[:, 1:].ne(IGNORE_INDEX).any(dim=0)
    first_target = int(is_target.int().argmax()) + 1
    return torch.arange(first_target - 1, labels.shape[1], device=labels.device)
