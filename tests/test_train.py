"""train: TRL masks the prompt and supervises completion + end-of-turn; a few real steps move the weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from seqdistill.config import TrainConfig
from seqdistill.stages import train
from tests.conftest import make_sample, write_jsonl


def _kept_file(path: Path, count: int = 8) -> Path:
    rows = [
        make_sample(f"p{i}", 0, f"{i} + {i} = {2 * i}. The answer is \\boxed{{{2 * i}}}.", reference=str(2 * i))
        for i in range(count)
    ]
    return write_jsonl(path, rows)


def test_prompt_masked_completion_and_end_of_turn_supervised(tiny_model, tmp_path):
    from seqdistill.models import load_model

    kept = _kept_file(tmp_path / "kept.jsonl", 2)
    cfg = TrainConfig(input=str(kept), model=tiny_model, output=str(tmp_path / "out"))
    model, tok = load_model(tiny_model, for_generation=False)
    examples = train.load_examples(cfg.input, cfg.reasoning)
    trainer = train.build_trainer(cfg, model, tok, examples, max_length=512)
    row = trainer.train_dataset[0]
    ids, labels = row["input_ids"], row["labels"]
    prompt_ids = tok.apply_chat_template(examples[0]["prompt"], add_generation_prompt=True, tokenize=True)
    if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "keys"):
        prompt_ids = prompt_ids["input_ids"]
    n_prompt = len(prompt_ids)
    assert ids[:n_prompt] == list(prompt_ids)
    assert all(label == -100 for label in labels[:n_prompt]), "prompt tokens must not be supervised"
    supervised = [t for t, label in zip(ids, labels, strict=True) if label != -100]
    assert supervised == ids[n_prompt:], "every completion token is supervised"
    text = tok.decode(supervised)
    assert text.startswith("0 + 0 = 0. The answer is \\boxed{0}.")
    assert tok.convert_tokens_to_ids("<|im_end|>") in supervised, "the end-of-turn token is supervised"


def test_train_moves_weights_and_saves_report(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    kept = _kept_file(tmp_path / "kept.jsonl", 8)
    out = tmp_path / "student"
    before = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    report = train.run(
        TrainConfig(input=str(kept), model=tiny_model, output=str(out), epochs=1, batch_size=4, learning_rate=1e-3)
    )
    assert report["steps"] == 2
    assert math.isfinite(report["train_loss"]) and report["train_loss"] > 0
    assert report["truncated_examples"] == 0 and report["max_length"] == report["longest_example"]
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "training must change the weights"
    saved = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "tokenizer.json", "training_report.json"} <= saved
    assert "chat_template.jinja" in saved or "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    assert json.loads((out / "training_report.json").read_text())["examples"] == 8


def test_explicit_short_max_length_reports_cut_samples(tiny_model, tmp_path, caplog):
    kept = _kept_file(tmp_path / "kept.jsonl", 4)
    cfg = TrainConfig(
        input=str(kept), model=tiny_model, output=str(tmp_path / "s"), epochs=1, max_length=40, max_truncated_share=1
    )
    report = train.run(cfg)
    assert report["truncated_examples"] == 4
    assert "cuts 4 of 4 samples" in caplog.text


def test_reasoning_rendered_as_think_block():
    from seqdistill.records import Sample

    row = make_sample(completion=[{"role": "assistant", "content": "42", "reasoning_content": "6*7"}])
    example = train.to_example(Sample.model_validate(row))
    assert example["completion"][0]["content"] == "<think>\n6*7\n</think>\n\n42"
    assert train.to_example(Sample.model_validate(row), "drop")["completion"][0]["content"] == "42"


def test_kept_file_trains_with_plain_trl(tiny_model, tmp_path):
    """A kept file is a TRL dataset as it is: load_dataset('json') + SFTTrainer, no conversion."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    kept = _kept_file(tmp_path / "kept.jsonl", 4)
    ds = load_dataset("json", data_files=str(kept), split="train")
    args = SFTConfig(
        output_dir=str(tmp_path / "o"),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        **train._checkpointing(SFTConfig, False),  # off, under this transformers' name for it (5.20 or 5.24)
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        args=args,
        train_dataset=ds,
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
    )
    result = trainer.train()
    assert math.isfinite(result.training_loss)


def test_empty_input_is_a_clear_error(tmp_path):
    from seqdistill.errors import DataError

    empty = tmp_path / "kept.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no samples to train on"):
        train.run(TrainConfig(input=str(empty), model="unused", output=str(tmp_path / "s")))


# --- LoRA, packing, eval split, resume ----------------------------------------------------------------


def test_lora_trains_only_adapter_weights_and_saves_a_merged_student(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from seqdistill.models import load_model

    kept = _kept_file(tmp_path / "kept.jsonl", 8)
    cfg = TrainConfig(input=str(kept), model=tiny_model, output=str(tmp_path / "lora"), epochs=1, batch_size=4,
                      learning_rate=1e-2, lora=True, lora_r=4)  # fmt: skip
    model, tok = load_model(tiny_model, for_generation=False)
    trainer = train.build_trainer(cfg, model, tok, train.load_examples(cfg.input, cfg.reasoning), 512)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    report = train.run(cfg)
    assert report["lora"] is True and math.isfinite(report["train_loss"])
    saved = {p.name for p in (tmp_path / "lora").iterdir()}
    assert "model.safetensors" in saved and "adapter_config.json" not in saved  # merged, loads as a plain model
    before = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "lora").state_dict()
    assert set(before) == set(after)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("proj.weight"))
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])  # not a LoRA target


def test_qlora_trains_adapters_on_a_4bit_student_and_saves_it_merged_in_full_precision(tiny_model, tmp_path):
    pytest.importorskip("bitsandbytes")  # in the dev extra: its 4-bit layers run on CPU
    import torch
    from bitsandbytes.nn import Linear4bit
    from transformers import AutoModelForCausalLM

    from seqdistill.models import load_model

    kept = _kept_file(tmp_path / "kept.jsonl", 8)
    out = tmp_path / "qlora"
    cfg = TrainConfig(input=str(kept), model=tiny_model, output=str(out), epochs=1, batch_size=4,
                      learning_rate=1e-2, qlora=True, lora_r=4)  # fmt: skip
    assert cfg.lora, "qlora implies lora"
    model, tok = load_model(tiny_model, for_generation=False, quantization_config=train._qlora_config(cfg))
    trainer = train.build_trainer(cfg, model, tok, train.load_examples(cfg.input, cfg.reasoning), 512)
    assert any(isinstance(m, Linear4bit) for m in trainer.model.modules()), "the base is quantized to 4 bits"
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    report = train.run(cfg)
    assert report["lora"] is True and math.isfinite(report["train_loss"])
    assert (out / "adapter" / "adapter_config.json").is_file()
    before = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert set(before) == set(after) and after["model.layers.0.mlp.up_proj.weight"].dtype == torch.float32
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("proj.weight"))


def test_packing_and_eval_split(tiny_model, tmp_path):
    kept = _kept_file(tmp_path / "kept.jsonl", 10)
    report = train.run(TrainConfig(input=str(kept), model=tiny_model, output=str(tmp_path / "p"), epochs=1,
                                   batch_size=2, packing=True, eval_fraction=0.2))  # fmt: skip
    assert report["packing"] is True and math.isfinite(report["train_loss"])
    assert report["eval_loss"] is not None and math.isfinite(report["eval_loss"])


def test_a_killed_run_resumes_from_its_last_checkpoint(tiny_model, tmp_path):
    from transformers import TrainerCallback

    from seqdistill.models import load_model

    kept = _kept_file(tmp_path / "kept.jsonl", 8)
    out = tmp_path / "s"
    cfg = TrainConfig(input=str(kept), model=tiny_model, output=str(out), epochs=3, batch_size=4, save_steps=2)

    class Crash(TrainerCallback):  # a crash right after step 3 (checkpoint-2 is on disk)
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt

    model, tok = load_model(tiny_model, for_generation=False)
    trainer = train.build_trainer(cfg, model, tok, train.load_examples(cfg.input, cfg.reasoning), 512)
    trainer.add_callback(Crash())
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    report = train.run(cfg)
    assert report["resumed_from"].endswith("checkpoint-2")
    assert report["steps"] == 6  # 3 epochs x 2 steps
    assert report["steps_run"] == 4  # the rerun took steps 3..6, not 1..6 again


def test_liger_without_the_package_is_a_one_line_error(tiny_model, tmp_path):
    import importlib.util

    from seqdistill.errors import ConfigError

    if importlib.util.find_spec("liger_kernel"):
        pytest.skip("liger-kernel is installed")
    kept = _kept_file(tmp_path / "kept.jsonl", 2)
    with pytest.raises(ConfigError, match="pip install liger-kernel"):
        train.run(TrainConfig(input=str(kept), model=tiny_model, output=str(tmp_path / "o"), liger_kernel=True))


def test_attention_kernel_and_dtype_reach_the_student(tiny_model):
    import importlib.util

    import torch

    from seqdistill.errors import ConfigError
    from seqdistill.models import load_model

    model, _ = load_model(tiny_model, "bfloat16", for_generation=False, attn_implementation="eager")
    assert model.config._attn_implementation == "eager" and model.dtype == torch.bfloat16
    if importlib.util.find_spec("flash_attn") is None:  # the GPU recipe's kernel, missing here: one clear line
        with pytest.raises(ConfigError, match="cannot load model"):
            load_model(tiny_model, for_generation=False, attn_implementation="flash_attention_2")


def test_padding_free_batches_give_the_loss_of_padded_ones(tiny_model, tmp_path):
    """One row without padding, sequences kept apart by position_ids: the same loss as the padded batch."""
    import torch

    from seqdistill.models import load_model

    kept = _kept_file(tmp_path / "kept.jsonl", 4)
    model, tok = load_model(tiny_model, for_generation=False)
    examples = train.load_examples(str(kept), "think")
    losses = {}
    for padding_free in (False, True):
        cfg = TrainConfig(input=str(kept), model=tiny_model, output=str(tmp_path / "o"), batch_size=4,
                          padding_free=padding_free)  # fmt: skip
        trainer = train.build_trainer(cfg, model, tok, examples, 512)
        batch = next(iter(trainer.get_train_dataloader()))
        assert ("attention_mask" not in batch and batch["input_ids"].shape[0] == 1) is padding_free
        with torch.no_grad():
            losses[padding_free] = float(trainer.compute_loss(trainer.model, dict(batch)))
    assert math.isfinite(losses[False]) and losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_padding_free_without_packing_refuses_to_cut(tiny_model, tmp_path):
    from seqdistill.errors import ConfigError

    kept = _kept_file(tmp_path / "kept.jsonl", 2)
    cfg = TrainConfig(input=str(kept), model=tiny_model, output=str(tmp_path / "o"), padding_free=True,
                      max_length=16, max_truncated_share=1.0)  # fmt: skip
    with pytest.raises(ConfigError, match="padding_free without packing cannot cut"):
        train.run(cfg)


def test_cli_training_output_is_readable_and_short_runs_have_a_loss_curve(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from seqdistill.cli import app

    kept = _kept_file(tmp_path / "kept.jsonl", 8)
    out = tmp_path / "student"
    result = CliRunner().invoke(app, ["train", str(kept), "--model", tiny_model, "--output", str(out),
                                      "--set", "batch_size=2", "--set", "epochs=1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "{'loss'" not in result.output, "no raw log dicts between the progress bars"
    assert "gemm_4bit" not in result.output, "no warning about 4-bit kernels when nothing is 4-bit"
    assert "step 4/4  loss " in result.output
    history = json.loads((out / "training_report.json").read_text())["loss_history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4], "4 steps: the default logs every step"
