"""Pre-flight: refuse to train when the template, EOS or max_length would train the student wrongly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqdistill.cli import app
from seqdistill.config import TrainConfig
from seqdistill.stages import train
from seqdistill.stages.preflight import PreflightError
from tests.conftest import make_sample, write_jsonl

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
NO_EOS = (  # the assistant turn is not closed: <|im_end|> is never a target
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "{% if m['role'] != 'assistant' %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
NO_ASSISTANT = (  # assistant turns render as nothing: the loss mask is empty
    "{% for m in messages %}{% if m['role'] != 'assistant' %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endif %}{% endfor %}"
)
STRIPS_THINK = (  # like Qwen3's template: reasoning of assistant turns is dropped
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' and '</think>' in m['content'] %}{{ m['content'].split('</think>')[-1].lstrip() }}"
    "{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _student(tiny_model: str, tmp_path: Path, template: str | None = None, eos: int | None = None) -> str:
    """A copy of the tiny model's tokenizer/config with another chat template or generation EOS."""
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig

    out = tmp_path / "student"
    tok = AutoTokenizer.from_pretrained(tiny_model)
    if template is not None:
        tok.chat_template = template
    tok.save_pretrained(out)
    LlamaConfig.from_pretrained(tiny_model).save_pretrained(out)
    gen = GenerationConfig(eos_token_id=eos if eos is not None else tok.eos_token_id)
    gen.save_pretrained(out)
    shutil.copy(Path(tiny_model) / "model.safetensors", out / "model.safetensors")
    return str(out)


def _kept(tmp_path: Path, reasoning: str | None = None, count: int = 4) -> Path:
    rows = []
    for i in range(count):
        completion = [{"role": "assistant", "content": f"{i} + {i} = {2 * i}. \\boxed{{{2 * i}}}",
                       "reasoning_content": reasoning}]  # fmt: skip
        rows.append(make_sample(f"p{i}", 0, completion=completion))
    return write_jsonl(tmp_path / "kept.jsonl", rows)


def _check(model: str, kept: Path, **kw):
    return train.check(TrainConfig(input=str(kept), model=model, **kw))


def test_a_good_template_passes_and_reports_lengths(tiny_model, tmp_path):
    report = _check(_student(tiny_model, tmp_path, CHATML), _kept(tmp_path, reasoning="double it"))
    assert report["examples"] == 4 and report["truncated"] == 0
    assert report["tokens_p50"] <= report["tokens_p90"] <= report["tokens_p99"] <= report["tokens_max"]
    assert report["recommended_max_length"] >= report["tokens_max"] and report["recommended_max_length"] % 64 == 0


@pytest.mark.parametrize(
    ("template", "reasoning", "message"),
    [
        (NO_ASSISTANT, None, "empty loss mask"),
        (NO_EOS, None, "end-of-turn token ['<|im_end|>'] is not supervised"),
        (STRIPS_THINK, "double it", "drops the reasoning"),
    ],
)
def test_template_problems_are_caught(tiny_model, tmp_path, template, reasoning, message):
    with pytest.raises(PreflightError, match=message.replace("[", r"\[").replace("]", r"\]").replace("|", r"\|")):
        _check(_student(tiny_model, tmp_path, template), _kept(tmp_path, reasoning=reasoning))


def test_generation_eos_mismatch_is_caught(tiny_model, tmp_path):
    with pytest.raises(PreflightError, match="generation config EOS"):
        _check(_student(tiny_model, tmp_path, CHATML, eos=5), _kept(tmp_path))


def test_truncation_beyond_the_allowed_share_is_caught(tiny_model, tmp_path):
    model, kept = _student(tiny_model, tmp_path, CHATML), _kept(tmp_path)
    with pytest.raises(PreflightError, match="would cut 4 of 4 examples") as e:
        _check(model, kept, max_length=16)
    assert "set max_length to at least 64" in str(e.value)
    assert _check(model, kept, max_length=16, max_truncated_share=1.0)["truncated"] == 4


def test_train_refuses_to_start_and_the_cli_says_why_in_one_line(tiny_model, tmp_path):
    model, kept = _student(tiny_model, tmp_path, NO_EOS), _kept(tmp_path)
    out = tmp_path / "never"
    result = CliRunner().invoke(app, ["train", str(kept), "--model", model, "--output", str(out)])
    assert result.exit_code == 1 and "pre-flight check failed" in result.output and "Traceback" not in result.output
    assert not out.exists()  # refused before training: nothing written
    ok = CliRunner().invoke(app, ["train", str(kept), "--model", _student(tiny_model, tmp_path / "b", CHATML),
                                  "--check"])  # fmt: skip
    assert ok.exit_code == 0 and "recommended_max_length" in ok.output
    assert json.loads(kept.read_text().splitlines()[0])["prompt_id"] == "p0"
