"""The student's loss inside TRL's SFTTrainer: completion cross-entropy, plus Hinton's soft targets when asked.

`DistillTrainer` is SFTTrainer with its own `compute_loss`:

- The LM head runs only at the columns where some example of the batch has a supervised next token
  (`logits_to_keep`), so prompt positions cost no vocabulary projection. TRL's fused head scores only
  supervised positions on CUDA (Triton); on CPU it scores every position, which is most of the gap this
  closes (bench/train_throughput.py). The loss is TRL's: summed over supervised tokens and divided by
  `num_items_in_batch` (all micro-batches and ranks), so gradient accumulation and DDP weigh tokens alike.
- With soft targets (`kd_alpha` > 0), batches carry the teacher's top-k ids and logprobs for each
  supervised token (`kd_ids`, `kd_logprobs`, -1 where there are none) and the loss is `kd.kd_loss`. The
  `kd` and `ce` parts are logged beside the loss.

Not covered: soft targets with packing or padding-free batches (their rows are re-cut); models whose
forward lacks `logits_to_keep` get full logits.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PrinterCallback, ProgressCallback, TrainerCallback
from trl import SFTTrainer

from seqdistill.kd import kd_loss

KD_COLUMNS = ("kd_ids", "kd_logprobs", "kd_tokens")
log = logging.getLogger(__name__)


def loss_line(logs: dict[str, Any], state) -> str | None:
    """One readable line for a logging step ('step 5/40  loss 0.7310  lr 4.4e-05'), None for other logs.

    >>> class S: global_step, max_steps = 5, 40
    >>> loss_line({"loss": 0.731, "learning_rate": 4.4e-05, "kd": 0.2}, S())
    'step 5/40  loss 0.7310  kd 0.2000  lr 4.4e-05'
    """
    if "loss" in logs:
        parts = [f"step {state.global_step}/{state.max_steps}", f"loss {logs['loss']:.4f}"]
        parts += [f"{key} {logs[key]:.4f}" for key in ("kd", "ce") if key in logs]
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.2g}")
        return "  ".join(parts)
    if "eval_loss" in logs:
        return f"step {state.global_step}/{state.max_steps}  eval loss {logs['eval_loss']:.4f}"
    return None


class _LossInProgressBar(ProgressCallback):
    """TRL/transformers' progress bar, with the latest loss in its line instead of raw dicts printed under it."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        line = loss_line(logs or {}, state)
        if state.is_world_process_zero and self.training_bar is not None and line:
            self.training_bar.set_postfix_str(line.split("  ", 1)[1], refresh=False)


class _LossLines(TrainerCallback):
    """Without a progress bar: one formatted log line per logging step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        line = loss_line(logs or {}, state)
        if state.is_world_process_zero and line:
            log.info("%s", line)


def readable_progress(trainer) -> None:
    """Replace the trainer's printing callbacks: the loss in the progress line, or one line per logging step."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_LossLines() if trainer.args.disable_tqdm else _LossInProgressBar())


class KDCollator:
    """Wraps TRL's collator: places each example's teacher rows at its supervised positions.

    An example's rows belong to its first completion tokens, which TRL supervises from the first label
    that is not -100; `kd_tokens` (the student ids the rows were aligned to) guards that placement: rows
    are kept only while the batch's tokens there are the same ids.
    """

    def __init__(self, base, k: int) -> None:
        self.base, self.k = base, k

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        teacher = [{c: ex.get(c) or [] for c in KD_COLUMNS} for ex in examples]
        batch = self.base([{key: v for key, v in ex.items() if key not in KD_COLUMNS} for ex in examples])
        b, seq_len = batch["input_ids"].shape
        ids = torch.full((b, seq_len, self.k), -1, dtype=torch.long)
        lps = torch.zeros((b, seq_len, self.k), dtype=torch.float32)
        for i, t in enumerate(teacher):
            supervised = (batch["labels"][i] != -100).nonzero()
            if not t["kd_ids"] or not len(supervised):
                continue
            start = int(supervised[0])
            tokens = batch["input_ids"][i, start : start + len(t["kd_tokens"])].tolist()
            n = 0
            while n < min(len(tokens), len(t["kd_ids"])) and tokens[n] == t["kd_tokens"][n]:
                n += 1
            ids[i, start : start + n] = torch.tensor(t["kd_ids"][:n], dtype=torch.long).view(n, self.k)
            lps[i, start : start + n] = torch.tensor(t["kd_logprobs"][:n], dtype=torch.float32).view(n, self.k)
        batch["kd_ids"], batch["kd_logprobs"] = ids, lps
        return batch


class DistillTrainer(SFTTrainer):
    """SFTTrainer whose loss projects only supervised columns and can add soft targets (see the module doc)."""

    def __init__(self, *args: Any, kd_alpha: float = 0.0, kd_temperature: float = 1.0, kd_k: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.kd_alpha, self.kd_temperature = kd_alpha, kd_temperature
        if kd_alpha > 0:
            self.data_collator = KDCollator(self.data_collator, kd_k)
        base = self.accelerator.unwrap_model(self.model)
        base = base.get_base_model() if hasattr(base, "get_base_model") else base  # peft
        self._keep_columns = "logits_to_keep" in inspect.signature(base.forward).parameters

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.kd_alpha > 0:  # keep the teacher columns for the collator
            self._signature_columns = [*self._signature_columns, *KD_COLUMNS]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        kd_ids, kd_lps = inputs.pop("kd_ids", None), inputs.pop("kd_logprobs", None)
        targets = labels[:, 1:]
        mask = targets != -100
        cols = mask.any(0).nonzero().squeeze(1)
        if self._keep_columns:
            outputs = model(**inputs, use_cache=False, logits_to_keep=cols)
            logits = outputs.logits
        else:
            outputs = model(**inputs, use_cache=False)
            logits = outputs.logits[:, :-1][:, cols]
        targets, mask = targets[:, cols], mask[:, cols]
        n_local = mask.sum()
        if kd_ids is not None and self.kd_alpha > 0:
            mean, parts = kd_loss(
                logits, targets, kd_ids[:, 1:][:, cols], kd_lps[:, 1:][:, cols], mask,
                temperature=self.kd_temperature, alpha=self.kd_alpha,
            )  # fmt: skip
            total = mean * n_local
            for name, value in parts.items():
                self._metrics[mode][name].append(value)
        else:
            picked = logits[mask].float()
            total = F.cross_entropy(picked, targets[mask], reduction="sum")
        loss = total / (n_local.clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients; the token count spans ranks
        self._log_token_metrics(mode, inputs, logits, targets, mask)
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _log_token_metrics(self, mode: str, inputs, logits, targets, mask) -> None:
        """TRL's mean_token_accuracy and num_tokens, so logs read the same as with SFTTrainer's own loss."""
        valid = self.accelerator.gather_for_metrics(mask.sum()).sum()
        correct = self.accelerator.gather_for_metrics(((logits.argmax(-1) == targets) & mask).sum()).sum()
        self._metrics[mode]["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
        if mode == "train":
            if "attention_mask" in inputs:
                local = inputs["attention_mask"].sum()
            else:
                local = torch.tensor(inputs["input_ids"].numel(), device=inputs["input_ids"].device)
            self._total_train_tokens += self.accelerator.gather_for_metrics(local).sum().item()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
