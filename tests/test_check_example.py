"""`train --check` shows one rendered example with the loss-bearing text marked (issue 14.8): the chat template's
text, each supervised span inside ⟦ ⟧, from the same masks training uses; long spans are shortened."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from seqdistill.cli import app
from seqdistill.stages.preflight import CLOSE, OPEN, marked_example
from seqdistill.stages.train import load_examples
from tests.conftest import make_sample, write_jsonl
from tests.test_preflight import CHATML, _student
from tests.test_train_conversations import QWEN, tool_sample


def _supervised(text: str) -> list[str]:
    return re.findall(f"{OPEN}(.*?){CLOSE}", text, re.S)


def test_train_check_prints_the_example_with_the_completion_marked(tiny_model, tmp_path):
    model = _student(tiny_model, tmp_path, CHATML)
    kept = write_jsonl(tmp_path / "kept.jsonl", [make_sample(f"p{i}", 0, f"{i} + {i} = {2 * i}.") for i in range(3)])
    result = CliRunner().invoke(app, ["train", str(kept), "--model", model, "--check"])
    assert result.exit_code == 0, result.output
    assert "the loss is computed on the text inside ⟦ ⟧" in result.stdout
    shown = result.stdout[result.stdout.index("<|im_start|>user") :]
    assert shown.startswith("<|im_start|>user\nQuestion p0?<|im_end|>\n<|im_start|>assistant\n⟦0 + 0 = 0.<|im_end|>")
    assert _supervised(shown) == ["0 + 0 = 0.<|im_end|>\n"]  # the answer and its end-of-turn token, nothing else


def test_a_conversation_marks_every_learned_turn_and_not_the_tool_result(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = QWEN
    (example,) = load_examples(str(write_jsonl(tmp_path / "kept.jsonl", [tool_sample(0)])), "think", "completion")
    text = marked_example(tok, example, max_chars=100_000)
    learned = _supervised(text)
    assert learned == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n',
        "It is sunny in Paris today, 20 degrees.<|im_end|>\n",
    ]
    outside = re.sub(f"{OPEN}.*?{CLOSE}", "", text, flags=re.S)
    assert "Sunny in Paris, 20 degrees Celsius" in outside and "What is the weather in Paris today?" in outside


def test_a_long_example_is_shortened_around_the_middle(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    long_answer = "start " + "word " * 2000 + "finish"
    row = make_sample("p0", 0, long_answer, prompt=[{"role": "user", "content": "Q " * 1000 + "end?"}])
    (example,) = load_examples(str(write_jsonl(tmp_path / "kept.jsonl", [row])), "think", "completion")
    text = marked_example(tok, example, max_chars=600)
    assert len(text) < 800
    (learned,) = _supervised(text)
    assert learned.startswith("start word") and learned.rstrip().endswith("finish<|im_end|>")
    assert re.search(r" … \d+ chars … ", learned)
    assert "end?" in text  # the prompt's tail, next to the answer, is kept
