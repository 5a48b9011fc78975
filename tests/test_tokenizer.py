"""One way to load a tokenizer (`seqdistill.models.load_tokenizer`): pad token, padding side, one error line."""

from __future__ import annotations

import shutil

import pytest

from seqdistill.errors import ConfigError
from seqdistill.models import load_tokenizer


def test_a_tokenizer_without_pad_token_pads_with_eos(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    copy = tmp_path / "tok"
    shutil.copytree(tiny_model, copy)
    raw = AutoTokenizer.from_pretrained(copy)
    raw.pad_token = None
    raw.save_pretrained(copy)
    assert AutoTokenizer.from_pretrained(copy).pad_token is None  # the file really has none
    tok = load_tokenizer(str(copy))
    assert tok.pad_token == tok.eos_token and tok.padding_side == "right"
    assert load_tokenizer(str(copy), for_generation=True).padding_side == "left"


def test_a_tokenizer_that_does_not_load_is_one_line_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_tokenizer(str(tmp_path / "nowhere"), key="kd_teacher_tokenizer")
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"cannot load the tokenizer of '{tmp_path / 'nowhere'}'")
    assert message.endswith("set kd_teacher_tokenizer to a local model directory holding it")
