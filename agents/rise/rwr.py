"""Reward-weighted regression (RWR): the weighted loss and a `transformers.Trainer` for it.

RWR maximises ``sum_i w_i * log pi(a_i | s_i)`` with ``w_i = exp(r_i / tau)``, where
``log pi(a | s)`` sums the log-probabilities of the target tokens of ``a``. The loss of
one optimizer step is the weighted mean negative log-likelihood over target tokens::

    loss = sum_i w_i * sum_{t in target_i} nll_it  /  sum_i w_i * len(target_i)

with both sums over every example of the step: all gradient-accumulation micro-batches
and all data-parallel processes. Hence:

* its gradient is the RWR objective's gradient on the step's examples, divided by a
  positive constant (longer responses count in proportion to their length, as in
  ``log pi(a | s)``);
* equal weights give exactly the standard token-mean causal-LM loss of transformers, so
  learning rates tuned for SFT carry over;
* scaling all weights changes nothing: only ratios ``exp((r_i - r_j) / tau)`` matter;
* splitting a step into micro-batches or devices changes nothing: the trainer computes
  the denominator over the whole step before the first micro-batch
  (`RWRTrainer.get_batch_samples`), each micro-batch contributes its numerator over
  that shared denominator, and the trainer does not divide by the accumulation steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer

from agents.rise.examples import IGNORE_INDEX


def rwr_weight(reward: float, tau: float = 0.4) -> float:
    """The RWR weight ``exp(reward / tau)`` of an action with this reward.

    Args:
        reward: The action's reward (1.0 correct, 0.0 wrong in rise-gym).
        tau: The temperature; smaller values favour high rewards more sharply.

    Returns:
        The weight, > 0.

    Example:
        >>> round(rwr_weight(1.0) / rwr_weight(0.0), 2)
        12.18
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}; the RISE reference code uses 0.4")
    return math.exp(reward / tau)


def weighted_nll(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The numerator and denominator of the RWR loss on one batch.

    Args:
        logits: ``(batch, kept, vocab)`` logits of the last ``kept`` positions of the
            sequences (``kept`` may be the full length).
        labels: ``(batch, length)`` token ids, ``IGNORE_INDEX`` where not a target.
        weights: ``(batch,)`` example weights.

    Returns:
        ``sum_i w_i * sum_t nll_it`` and ``sum_i w_i * len(target_i)``, as float32 scalars.
    """
    kept = logits.shape[1]
    targets = labels[:, labels.shape[1] - kept + 1 :]
    mask = targets.ne(IGNORE_INDEX)
    nll = F.cross_entropy(logits[:, :-1][mask].float(), targets[mask], reduction="none")
    token_weights = weights.float()[:, None].expand_as(targets)[mask]
    return (token_weights * nll).sum(), token_weights.sum()


def weighted_target_count(labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i * len(target_i)``: the loss denominator's share of one batch.

    Position 0 is never predicted, so a label there is not counted.
    """
    return (labels[:, 1:].ne(IGNORE_INDEX).sum(dim=1) * weights.float()).sum()


class RWRTrainer(Trainer):
    """A `transformers.Trainer` whose loss is RWR's weighted NLL on target tokens.

    Batches come from `agents.rise.examples.RWRCollator` (``input_ids``,
    ``attention_mask``, ``labels``, ``weights``); the training arguments must set
    ``remove_unused_columns=False`` so the ``weights`` survive. The normalisation is
    described in this module's docstring.
    """

    # compute_loss divides by the whole step's denominator, so training_step must not
    # divide by the number of accumulation steps again.
    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, **kwargs: Any):
        """Create the trainer; takes `transformers.Trainer`'s arguments."""
        super().__init__(*args, **kwargs)
        if self.args.remove_unused_columns:
            raise ValueError(
                "RWRTrainer needs the 'weights' column: pass "
                "TrainingArguments(remove_unused_columns=False)"
            )
        # The loss is computed here, never by the model: this stops the base class from
        # counting unweighted label tokens as `num_items_in_batch`.
        self.model_accepts_loss_kwargs = False

    def get_batch_samples(
        self, epoch_iterator: Iterator, num_batches: int, device: torch.device
    ) -> tuple[list, torch.Tensor | None]:
        """Fetch one optimizer step's micro-batches and its loss denominator.

        Returns:
            The micro-batches, and ``sum_i w_i * len(target_i)`` over all of them and
            all processes, passed to `compute_loss` as ``num_items_in_batch``.
        """
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not batches:
            return batches, None
        total = torch.stack(
            [weighted_target_count(b["labels"], b["weights"]).to(device) for b in batches]
        ).sum()
        if self.accelerator.num_processes > 1:
            total = self.accelerator.gather(total).sum()
        return batches, total

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The RWR loss of one micro-batch.

        Only the logits from the first target position on are computed (the
        ``logits_to_keep`` argument of transformers' causal LMs), so returned outputs
        hold logits for the last positions only.

        Args:
            model: The (possibly wrapped) causal LM.
            inputs: A batch from `RWRCollator`.
            return_outputs: Also return the model outputs.
            num_items_in_batch: The step's denominator from `get_batch_samples`; None
                (e.g. in evaluation) normalises by this batch's own.

        Returns:
            The loss, and the model outputs if ``return_outputs``.
        """
        labels, weights = inputs["labels"], inputs["weights"]
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            logits_to_keep=_logits_to_keep(labels),
        )
        numerator, denominator = weighted_nll(outputs.logits, labels, weights)
        if num_items_in_batch is None:
            loss = numerator / denominator
        else:
            # Data-parallel gradients are averaged over processes; the denominator
            # already covers all of them, so undo the average.
            loss = numerator / num_items_in_batch * self.accelerator.num_processes
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
