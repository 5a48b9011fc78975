"""train on conversations: every assistant turn of the completion learned (end-of-turn included), tool calls
as the template renders them, tool results and user turns never; the mask is found by rendering prefixes.

Templates: SmolLM2's own (no tools, no `{% generation %}` markers), Qwen2.5's real template with tools
(tests/templates/qwen2_5.jinja, as shipped by Qwen2.5-Instruct; copied from TRL's chat_templates), and
TRL's generation-tagged training variant of it as an independent check of the mask.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqdistill.cli import app
from seqdistill.config import TrainConfig
from seqdistill.records import Sample
from seqdistill.stages import train
from seqdistill.stages.preflight import PreflightError
from tests.conftest import make_sample, write_jsonl

QWEN = (Path(__file__).parent / "templates" / "qwen2_5.jinja").read_text(encoding="utf-8")
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city today.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
RE_RENDERS = (  # like Qwen3's template: the reasoning of every assistant turn but the last is dropped
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' and not loop.last and '</think>' in m['content'] %}"
    "{{ m['content'].split('</think>')[-1].lstrip() }}{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TOOL_IN_ANSWER = (  # tool results printed at the start of the next assistant turn (inside the learned span)
    "{%- set ns = namespace(result='') -%}{%- for m in messages -%}"
    "{%- if m['role'] == 'tool' -%}{%- set ns.result = ns.result + m['content'] -%}"
    "{%- else -%}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' and ns.result %}"
    "Tool said: {{ ns.result }}\n{% set ns.result = '' %}{% endif %}{{ m['content'] }}"
    "{% for c in m['tool_calls'] or [] %}<tool_call>{{ c['function'] | tojson }}</tool_call>{% endfor %}<|im_end|>\n"
    "{%- endif -%}{%- endfor -%}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif -%}"
)


def tool_sample(i: int, reasoning: str | None = None) -> dict:
    """A tool-use record as OpenAI shapes it: call (null content, JSON-string arguments), result, final answer."""
    city = ["Paris", "Oslo", "Lima", "Cairo"][i % 4]
    completion = [
        {"role": "assistant", "content": None, "reasoning_content": reasoning,
         "tool_calls": [{"id": f"call_{i}", "type": "function",
                         "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}]},
        {"role": "tool", "tool_call_id": f"call_{i}", "name": "get_weather",
         "content": f"Sunny in {city}, {20 + i} degrees Celsius"},
        {"role": "assistant", "content": f"It is sunny in {city} today, {20 + i} degrees."},
    ]  # fmt: skip
    prompt = [{"role": "user", "content": f"What is the weather in {city} today?"}]
    return make_sample(f"w{i}", 0, f"w{i}", prompt=prompt, completion=completion, tools=TOOLS, reference=None)


def chat_sample(i: int) -> dict:
    """A plain multi-turn chat: an earlier exchange in the prompt, then the teacher's answer."""
    prompt = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": f"Remember the number {i}."},
        {"role": "assistant", "content": f"Noted: number {i} is remembered."},
        {"role": "user", "content": "What was the number, doubled?"},
    ]
    completion = [{"role": "assistant", "content": f"The number doubled is {2 * i}."}]
    return make_sample(f"c{i}", 0, f"c{i}", prompt=prompt, completion=completion)


def student(tiny_model: str, tmp_path: Path, template: str | None, name: str = "student") -> str:
    """The tiny model with another chat template (SmolLM2's tokenizer: <|im_start|>/<|im_end|> are its tokens)."""
    from transformers import AutoTokenizer

    out = tmp_path / name
    shutil.copytree(tiny_model, out)
    if template is not None:
        tok = AutoTokenizer.from_pretrained(tiny_model)
        tok.chat_template = template
        tok.save_pretrained(out)
    return str(out)


@pytest.fixture
def tok(tiny_model):
    """A fresh SmolLM2 tokenizer (tests set its chat template)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def masked(tok, row: dict) -> tuple[str, str]:
    """(the learned text, the text not learned) of a tokenized row."""
    ids, mask = row["input_ids"], row["completion_mask"]
    learned = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
    rest = tok.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    return learned, rest


def examples_of(tmp_path: Path, rows: list[dict], train_on: str = "completion") -> list[dict]:
    return train.load_examples(str(write_jsonl(tmp_path / "kept.jsonl", rows)), "think", train_on)


def test_qwen_template_learns_the_tool_call_and_the_answer_not_the_tool_result(tok, tmp_path):
    tok.chat_template = QWEN
    (row,) = train.training_rows(tok, examples_of(tmp_path, [tool_sample(0)]))
    learned, rest = masked(tok, row)
    assert learned == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        "It is sunny in Paris today, 20 degrees.<|im_end|>\n"
    )
    assert "Sunny in Paris, 20 degrees Celsius" in rest and "What is the weather in Paris today?" in rest
    assert '"name": "get_weather", "description"' in rest  # the tool definitions reach the system prompt


def test_the_mask_agrees_with_generation_markers(tok, tmp_path):
    """TRL's generation-tagged Qwen2.5 template marks the assistant turns itself: our prefix mask is the same set,
    less the newline after each `<|im_start|>assistant` (which our generation prompt already holds)."""
    import trl

    tagged = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5_training.jinja").read_text(encoding="utf-8")
    tok.chat_template = tagged
    examples = examples_of(tmp_path, [tool_sample(1, reasoning="I should look it up."), tool_sample(2)])
    for example, row in zip(examples, train.training_rows(tok, examples), strict=True):
        marked = tok.apply_chat_template(
            example["messages"], tools=example["tools"], tokenize=True, return_dict=True,
            return_assistant_tokens_mask=True,
        )  # fmt: skip
        assert marked["input_ids"] == row["input_ids"]
        ours = {i for i, m in enumerate(row["completion_mask"]) if m}
        theirs = {i for i, m in enumerate(marked["assistant_masks"]) if m}
        assert ours and ours <= theirs
        assert [tok.decode([row["input_ids"][i]]) for i in sorted(theirs - ours)] == ["\n", "\n"]


def test_smollm2_chat_learns_the_completion_or_every_assistant_turn(tok, tmp_path):
    only = examples_of(tmp_path, [chat_sample(3)])
    assert "prompt" in only[0], "a plain chat with train_on: completion stays TRL's prompt-completion"
    (row,) = train.training_rows(tok, examples_of(tmp_path, [chat_sample(3)], "all_assistant"))
    learned, rest = masked(tok, row)
    assert learned == "Noted: number 3 is remembered.<|im_end|>\nThe number doubled is 6.<|im_end|>\n"
    assert "Remember the number 3." in rest and "What was the number, doubled?" in rest and "terse" in rest


def test_a_file_mixing_shapes_masks_plain_records_as_trl_does(tiny_model, tmp_path):
    """One plain record among conversations is tokenized by us; its labels equal TRL's own for that record."""
    from seqdistill.models import load_model

    model, tok = load_model(tiny_model, for_generation=False)
    plain = make_sample("p0", 0, "3 + 4 = 7. The answer is \\boxed{7}.")
    cfg = TrainConfig(input="unused", model=tiny_model, output=str(tmp_path / "out"))
    trl_rows = examples_of(tmp_path, [plain])
    ours = train.training_rows(tok, examples_of(tmp_path, [plain, chat_sample(1)], "all_assistant"))
    by_trl = train.build_trainer(cfg, model, tok, trl_rows, max_length=512).train_dataset[0]
    by_us = train.build_trainer(cfg, model, tok, ours, max_length=512).train_dataset[0]
    assert by_us["input_ids"] == by_trl["input_ids"] and by_us["labels"] == by_trl["labels"]
    assert any(label != -100 for label in by_us["labels"])


def test_preflight_refuses_a_template_that_drops_tool_calls(tiny_model, tmp_path):
    """SmolLM2's template prints only `content`: the call would be learned as an empty turn."""
    kept = write_jsonl(tmp_path / "kept.jsonl", [tool_sample(i) for i in range(2)])
    with pytest.raises(PreflightError, match="drops tool call 'get_weather' of assistant message 1"):
        train.check(TrainConfig(input=str(kept), model=tiny_model))


def test_preflight_refuses_a_template_that_re_renders_earlier_turns(tiny_model, tmp_path):
    model = student(tiny_model, tmp_path, RE_RENDERS)
    row = chat_sample(2)
    row["prompt"][2]["content"] = "<think>\nStore it.\n</think>\n\nNoted."
    kept = write_jsonl(tmp_path / "kept.jsonl", [row])
    with pytest.raises(PreflightError, match="re-renders assistant message 2 once later messages follow"):
        train.check(TrainConfig(input=str(kept), model=model, train_on="all_assistant"))


def test_preflight_catches_a_template_that_puts_tool_results_in_the_next_assistant_turn(tiny_model, tmp_path):
    """The prefix property holds, yet the answer's turn would teach the student to write the tool's result."""
    model = student(tiny_model, tmp_path, TOOL_IN_ANSWER)
    kept = write_jsonl(tmp_path / "kept.jsonl", [tool_sample(0)])
    with pytest.raises(PreflightError, match="the loss mask covers the tool result of message 2"):
        train.check(TrainConfig(input=str(kept), model=model))


def test_kd_on_conversations_is_refused_in_one_line(tiny_model, tmp_path):
    kept = write_jsonl(tmp_path / "kept.jsonl", [tool_sample(0)])
    result = CliRunner().invoke(
        app, ["train", str(kept), "--model", tiny_model, "--output", str(tmp_path / "s"), "--set", "kd_alpha=0.5"]
    )
    assert result.exit_code == 1
    assert "kd_alpha > 0 (soft targets) covers plain prompt-completion records only" in result.output
    assert "Traceback" not in result.output


def test_a_tool_use_file_trains_end_to_end(tiny_model, tmp_path):
    """`train --check` passes on the Qwen template, then a real run learns the masked labels and moves weights."""
    import torch
    from transformers import AutoModelForCausalLM

    model = student(tiny_model, tmp_path, QWEN)
    kept = write_jsonl(tmp_path / "kept.jsonl", [tool_sample(i) for i in range(4)] + [chat_sample(0)])
    check = CliRunner().invoke(app, ["train", str(kept), "--model", model, "--check"])
    assert check.exit_code == 0, check.output
    out = tmp_path / "trained"
    report = train.run(
        TrainConfig(input=str(kept), model=model, output=str(out), epochs=1, batch_size=5, learning_rate=1e-3)
    )
    assert report["examples"] == 5 and report["steps"] == 1 and math.isfinite(report["train_loss"])
    assert report["preflight"]["checked"] == 5
    before = AutoModelForCausalLM.from_pretrained(model).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_trainer_labels_are_the_conversation_mask(tiny_model, tmp_path):
    from seqdistill.models import load_model

    model_dir = student(tiny_model, tmp_path, QWEN)
    model, tok = load_model(model_dir, for_generation=False)
    rows = train.training_rows(tok, examples_of(tmp_path, [tool_sample(0)]))
    cfg = TrainConfig(input="unused", model=model_dir, output=str(tmp_path / "out"))
    dataset = train.build_trainer(cfg, model, tok, rows, max_length=1024).train_dataset
    labels, mask = dataset[0]["labels"], rows[0]["completion_mask"]
    assert [label != -100 for label in labels] == [bool(m) for m in mask]


def test_record_reads_openai_tool_calls_and_writes_trl_shape():
    sample = Sample.model_validate(tool_sample(0))
    call = json.loads(sample.to_json())["completion"][0]
    assert call["content"] == "" and call["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert sample.text == "It is sunny in Paris today, 20 degrees."
