"""Train throughput: TRL's SFT defaults vs seqdistill's settings on the same data and student, in one run.

    .venv/bin/python bench/train_throughput.py [--kept runs/demo/kept.jsonl] [--steps 12] [--batch-size 8]

Both runs train the same student for the same number of optimizer steps at the same batch size. "TRL
defaults" is `SFTTrainer` with `SFTConfig` given only the run-length settings (TRL turns activation
checkpointing and bf16 on by default); "seqdistill" is what `seqdistill train` uses for the demo:
`DistillTrainer` (the LM head projects only supervised columns), no activation checkpointing, bf16; a
middle row keeps those settings with TRL's own loss, to show what each part gives.
Tokens/s are timed from the end of the first `--warmup` steps to the last step (optimizer creation and
first-call costs excluded alike). Prints real (non-padding) tokens/s of both, their ratio, and the share
of padding in the batches each one builds. Make `runs/demo/kept.jsonl` first (`make demo`, or `make
generate filter`).
"""

from __future__ import annotations

import argparse
import os
import time
import types
from pathlib import Path

os.environ.setdefault("SEQDISTILL_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def padding_share(trainer, steps: int) -> float:
    """Share of the token slots in the first `steps` batches that are padding."""
    real = total = 0
    for i, batch in enumerate(trainer.get_train_dataloader()):
        if i == steps:
            break
        mask = batch.get("attention_mask")
        ids = batch["input_ids"]
        total += ids.numel()
        real += int(mask.sum()) if mask is not None else ids.numel()  # packed, padding-free: no padding at all
    return 1 - real / max(total, 1)


def measure(name: str, trainer, steps: int, warmup: int) -> dict:
    from transformers import TrainerCallback

    marks: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append((time.perf_counter(), float(state.num_input_tokens_seen)))

    pad = padding_share(trainer, steps)
    trainer.add_callback(Clock())
    trainer.train()
    (t0, n0), (t1, n1) = marks[warmup - 1], marks[-1]
    seconds, tokens = t1 - t0, n1 - n0
    return {"name": name, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "padding": pad}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kept", default="runs/demo/kept.jsonl")
    ap.add_argument("--model", default="bundled:smollm2")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2, help="Steps left out of the timing.")
    args = ap.parse_args()
    if not Path(args.kept).is_file():
        raise SystemExit(f"{args.kept}: no such file (run `make demo` first)")

    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    from seqdistill.config import TrainConfig
    from seqdistill.models import load_model
    from seqdistill.stages import train

    datasets.disable_progress_bars()
    examples = train.load_examples(args.kept, "think")
    results = []

    model, tok = load_model(args.model, for_generation=False)
    defaults = SFTConfig(output_dir="/tmp/seqdistill-bench-trl", max_steps=args.steps, report_to="none",
                         per_device_train_batch_size=args.batch_size, use_cpu=not torch.cuda.is_available(),
                         save_strategy="no", logging_steps=1, include_num_input_tokens_seen="non_padding")  # fmt: skip
    trl_trainer = SFTTrainer(model=model, args=defaults, processing_class=tok,
                             train_dataset=datasets.Dataset.from_list(examples))  # fmt: skip
    results.append(measure("TRL defaults", trl_trainer, args.steps, args.warmup))

    def seqdistill_trainer(trl_loss: bool):
        model, tok = load_model(args.model, for_generation=False)
        cfg = TrainConfig(input=args.kept, model=args.model, output="/tmp/seqdistill-bench-ours", bf16=True,
                          batch_size=args.batch_size, epochs=100)  # fmt: skip
        trainer = train.build_trainer(cfg, model, tok, examples, max(train.example_lengths(tok, examples)))
        if trl_loss:  # the ablation: seqdistill's settings, TRL's own loss (fused head over every position on CPU)
            trainer.compute_loss = types.MethodType(SFTTrainer.compute_loss, trainer)
        trainer.args.max_steps = args.steps
        trainer.args.include_num_input_tokens_seen = "non_padding"
        trainer.args.logging_steps = 1
        return trainer

    results.append(measure("seqdistill settings with TRL's loss (no activation checkpointing, bf16)",
                           seqdistill_trainer(trl_loss=True), args.steps, args.warmup))  # fmt: skip
    results.append(measure("seqdistill (+ LM head on supervised columns only)", seqdistill_trainer(trl_loss=False),
                           args.steps, args.warmup))  # fmt: skip

    print(f"# train throughput: {len(examples)} examples from {args.kept}, student {args.model}, {args.steps} "
          f"steps of batch {args.batch_size} (first {args.warmup} untimed), {os.cpu_count()} CPUs")  # fmt: skip
    print("| settings | real tokens | seconds | real tokens/s | padding share |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['name']} | {r['tokens']:.0f} | {r['seconds']:.1f} | {r['tokens_per_s']:.1f} | {r['padding']:.1%} |"
        )
    base = results[0]["tokens_per_s"]
    print(f"ratio seqdistill / TRL defaults: {results[-1]['tokens_per_s'] / base:.2f}x "
          f"(settings alone: {results[1]['tokens_per_s'] / base:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
