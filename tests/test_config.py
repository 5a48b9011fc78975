"""Tests for seqdistill.config: precedence, unknown keys, recipes, --set parsing, API keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqdistill.config import (
    FilterConfig,
    GenerateConfig,
    PipelineConfig,
    api_key,
    load_pipeline,
    load_stage,
    parse_set,
)
from seqdistill.errors import ConfigError


def _yaml(tmp_path: Path, text: str, name: str = "cfg.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------- precedence


def test_defaults_without_file():
    cfg = load_stage("generate")
    assert isinstance(cfg, GenerateConfig)
    assert cfg == GenerateConfig()
    assert cfg.sampling.temperature == 0.7


def test_yaml_then_flags_then_set(tmp_path):
    path = _yaml(
        tmp_path, "model: from-yaml\nn: 2\nbackend: openai\nsampling:\n  temperature: 0.3\n  max_tokens: 64\n"
    )
    only_yaml = load_stage("generate", path)
    assert (only_yaml.model, only_yaml.n, only_yaml.sampling.temperature) == ("from-yaml", 2, 0.3)

    flagged = load_stage("generate", path, {"model": "from-flag", "n": 4, "base_url": None})
    assert (flagged.model, flagged.n) == ("from-flag", 4)
    assert flagged.base_url == GenerateConfig().base_url  # a None flag is "not given"
    assert flagged.backend == "openai"  # untouched YAML keys survive

    final = load_stage(
        "generate", path, {"model": "from-flag", "n": 4}, ["model=from-set", "sampling.temperature=0.9"]
    )
    assert final.model == "from-set"  # --set beats the flag
    assert final.n == 4  # the flag beats YAML
    assert final.sampling.temperature == 0.9  # nested --set beats YAML ...
    assert final.sampling.max_tokens == 64  # ... without wiping sibling keys


def test_dotted_flag_creates_nested_section(tmp_path):
    cfg = load_stage("generate", None, {"prompts.source": "p.jsonl", "prompts.limit": 5})
    assert cfg.prompts.source == "p.jsonl"
    assert cfg.prompts.limit == 5


def test_set_into_scalar_is_an_error(tmp_path):
    path = _yaml(tmp_path, "model: m\n")
    with pytest.raises(ConfigError, match="model is not a section"):
        load_stage("generate", path, sets=["model.x=1"])


# ---------------------------------------------------------------------------- unknown keys and bad values


def test_unknown_top_level_key_is_named(tmp_path):
    path = _yaml(tmp_path, "chek: math\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'chek'") as e:
        load_stage("filter", path)
    assert "cfg.yaml" in str(e.value)


def test_unknown_nested_key_is_named(tmp_path):
    path = _yaml(tmp_path, "sampling:\n  temprature: 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'sampling\.temprature'"):
        load_stage("generate", path)


def test_unknown_key_from_set_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'sampling\.topp'"):
        load_stage("generate", sets=["sampling.topp=0.5"])


def test_unknown_key_in_recipe_section_is_named(tmp_path):
    path = _yaml(tmp_path, "run_dir: runs/x\nfilter:\n  max_per_promt: 2\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'filter\.max_per_promt'"):
        load_stage("filter", path)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("n: lots\n", "n"),
        ("n: 0\n", "n"),
        ("sampling:\n  top_p: 1.5\n", "sampling.top_p"),
        ("sampling:\n  max_tokens: [1]\n", "sampling.max_tokens"),
    ],
)
def test_bad_value_names_the_field(tmp_path, text, field):
    path = _yaml(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_stage("generate", path)
    msg = str(e.value)
    assert msg.startswith(f"config {path} line {text.count(chr(10))}: {field}: ")
    assert "unknown config key" not in msg


def test_bad_value_type_from_flag_names_the_field():
    with pytest.raises(ConfigError, match=r"^--max-per-prompt: max_per_prompt: "):
        load_stage("filter", None, {"max_per_prompt": 0})


def test_a_bad_value_is_blamed_on_where_it_was_given(tmp_path):
    path = _yaml(tmp_path, "n: 2\nsampling:\n  temperature: 0.5\n")
    with pytest.raises(ConfigError, match=r"^--set n: n: "):
        load_stage("generate", path, sets=["n=lots"])
    with pytest.raises(ConfigError, match=r"^--n: n: "):
        load_stage("generate", path, {"n": -1})
    hot = _yaml(tmp_path, "n: 2\nsampling:\n  temperature: hot\n")
    with pytest.raises(ConfigError, match=rf"^config {hot} line 3: sampling.temperature: "):
        load_stage("generate", hot, sets=["sampling.top_p=0.5"])
    recipe = _yaml(tmp_path, "run_dir: r\nfilter:\n  check: math\n  workers: -1\n")
    with pytest.raises(ConfigError, match=rf"^config {recipe} line 4: filter.workers: "):
        load_stage("filter", recipe)


@pytest.mark.parametrize(
    ("section", "text", "hint"),
    [
        ("generate", "sampling:\n  temprature: 0.5\n", "did you mean 'sampling.temperature'?"),
        ("filter", "max_per_promt: 2\n", "did you mean 'max_per_prompt'?"),
        ("train", "max_per_prompt: 2\n", "'max_per_prompt' is a key of filter, not of train"),
        ("train", "zzz: 1\n", "see docs/config.md"),
    ],
)
def test_an_unknown_key_leads_to_the_fix(tmp_path, section, text, hint):
    with pytest.raises(ConfigError) as e:
        load_stage(section, _yaml(tmp_path, text))
    assert hint in str(e.value)


# ---------------------------------------------------------------------------- recipes


RECIPE = """\
run_dir: runs/x
generate:
  model: teacher
filter:
  check: numeric
  max_per_prompt: 2
train:
  epochs: 1
"""


def test_stage_from_recipe_gets_run_dir_paths(tmp_path):
    path = _yaml(tmp_path, RECIPE)
    cfg = load_stage("filter", path)
    assert isinstance(cfg, FilterConfig)
    assert Path(cfg.input) == Path("runs/x/samples.jsonl")
    assert Path(cfg.output) == Path("runs/x/kept.jsonl")
    assert (cfg.check, cfg.max_per_prompt) == ("numeric", 2)


def test_stage_from_recipe_flags_go_into_the_section(tmp_path):
    path = _yaml(tmp_path, RECIPE)
    cfg = load_stage("filter", path, {"input": "other.jsonl", "check": None}, ["max_per_prompt=5"])
    assert cfg.input == "other.jsonl"
    assert Path(cfg.output) == Path("runs/x/kept.jsonl")
    assert (cfg.check, cfg.max_per_prompt) == ("numeric", 5)


def test_generate_and_train_from_recipe(tmp_path):
    path = _yaml(tmp_path, RECIPE)
    gen = load_stage("generate", path)
    assert gen.model == "teacher"
    assert Path(gen.output) == Path("runs/x/samples.jsonl")
    train = load_stage("train", path)
    assert Path(train.input) == Path("runs/x/kept.jsonl")
    assert Path(train.output) == Path("runs/x/student")
    assert train.epochs == 1


def test_recipe_without_this_stage_section_uses_defaults(tmp_path):
    path = _yaml(tmp_path, "generate:\n  model: m\ntrain:\n  epochs: 1\n")  # no run_dir, no filter section
    cfg = load_stage("filter", path)
    assert Path(cfg.input) == Path("runs/default/samples.jsonl")
    assert Path(cfg.output) == Path("runs/default/kept.jsonl")
    assert cfg.check == "math"


def test_recipe_without_eval_section_is_an_error_for_eval(tmp_path):
    path = _yaml(tmp_path, RECIPE)
    with pytest.raises(ConfigError, match="no 'eval' section"):
        load_stage("eval", path)


def test_load_pipeline_chains_stage_paths(tmp_path):
    path = _yaml(tmp_path, RECIPE + "eval:\n  prompts:\n    source: heldout.jsonl\n")
    cfg = load_pipeline(path)
    assert isinstance(cfg, PipelineConfig)
    assert Path(cfg.generate.output) == Path("runs/x/samples.jsonl")
    assert cfg.filter.input == cfg.generate.output
    assert cfg.train.input == cfg.filter.output
    assert Path(cfg.train.input) == Path("runs/x/kept.jsonl")
    assert Path(cfg.eval.output) == Path("runs/x/eval.jsonl")
    assert cfg.eval.sampling.temperature == 0.0  # eval's own sampling defaults


def test_load_pipeline_keeps_explicit_paths_and_applies_set(tmp_path):
    path = _yaml(tmp_path, RECIPE.replace("  check: numeric\n", "  check: numeric\n  output: mine.jsonl\n"))
    cfg = load_pipeline(path, ["run_dir=runs/y", "generate.output=gen.jsonl"])
    assert cfg.generate.output == "gen.jsonl"
    assert cfg.filter.input == "gen.jsonl"
    assert cfg.filter.output == "mine.jsonl"
    assert cfg.train.input == "mine.jsonl"
    assert Path(cfg.train.output) == Path("runs/y/student")
    assert cfg.eval is None


@pytest.mark.parametrize("name", ["demo-cpu.yaml", "gsm8k-qwen2.5-7b-to-1.5b-gpu.yaml"])
def test_repository_recipes_load(name):
    recipe = Path(__file__).resolve().parents[1] / "configs" / name
    cfg = load_pipeline(str(recipe))
    assert cfg.train.input == cfg.filter.output
    assert cfg.reference_baseline


# ---------------------------------------------------------------------------- --set parsing


def test_parse_set_values_are_yaml_scalars():
    got = parse_set(["a=1", "b=0.5", "c=true", "d=[1, 2]", "e=hello", "f=", "g=null", " h = x=y", "i=[unclosed"])
    assert got == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": [1, 2],
        "e": "hello",
        "f": "",
        "g": None,
        "h": "x=y",
        "i": "[unclosed",  # not valid YAML: kept as the raw string
    }
    assert isinstance(got["a"], int) and isinstance(got["b"], float)


@pytest.mark.parametrize("item", ["foo", "=1", "  =x"])
def test_parse_set_rejects_malformed_items(item):
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set([item])


def test_set_list_and_exponent_values_validate():
    cfg = load_stage("generate", sets=["sampling.stop=['</s>', '###']", "sampling.seed=3"])
    assert cfg.sampling.stop == ["</s>", "###"]
    assert cfg.sampling.seed == 3
    train = load_stage("train", sets=["learning_rate=1e-5", "bf16=true"])
    assert train.learning_rate == pytest.approx(1e-5)
    assert train.bf16 is True


# ---------------------------------------------------------------------------- YAML files


def test_invalid_yaml_gives_line_number(tmp_path):
    path = _yaml(tmp_path, "model: m\nn: 2\nsampling: [unclosed\n  top_p: 0.5\n")
    with pytest.raises(ConfigError, match=r"line \d+: not valid YAML") as e:
        load_stage("generate", path)
    assert "cfg.yaml" in str(e.value)


def test_invalid_yaml_line_number_is_the_bad_line(tmp_path):
    path = _yaml(tmp_path, "model: m\nn: 2\nbad: : :\n")
    with pytest.raises(ConfigError, match=r"line 3: not valid YAML"):
        load_stage("generate", path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"no such file"):
        load_stage("filter", str(tmp_path / "absent.yaml"))


def test_non_mapping_yaml(tmp_path):
    path = _yaml(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_stage("filter", path)


def test_empty_yaml_is_defaults(tmp_path):
    assert load_stage("filter", _yaml(tmp_path, "# nothing\n")) == FilterConfig()


# ---------------------------------------------------------------------------- API keys

SECRET = "sk-test-DO-NOT-PRINT-0123456789"


def test_api_key_from_named_env_var(monkeypatch):
    monkeypatch.setenv("SEQDISTILL_TEST_KEY", SECRET)
    assert api_key(GenerateConfig(api_key_env="SEQDISTILL_TEST_KEY")) == SECRET


def test_api_key_default_without_env_name(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert api_key(GenerateConfig()) == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert api_key(GenerateConfig()) == SECRET


def test_missing_api_key_env_names_the_variable(monkeypatch):
    monkeypatch.delenv("SEQDISTILL_MISSING_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with pytest.raises(ConfigError) as e:
        api_key(GenerateConfig(api_key_env="SEQDISTILL_MISSING_KEY"))
    assert "SEQDISTILL_MISSING_KEY" in str(e.value)
    assert SECRET not in str(e.value)


def test_empty_api_key_env_counts_as_missing(monkeypatch):
    monkeypatch.setenv("SEQDISTILL_EMPTY_KEY", "")
    with pytest.raises(ConfigError, match="SEQDISTILL_EMPTY_KEY"):
        api_key(GenerateConfig(api_key_env="SEQDISTILL_EMPTY_KEY"))


def test_key_pasted_into_api_key_env_is_not_echoed():
    with pytest.raises(ConfigError) as e:
        api_key(GenerateConfig(api_key_env=SECRET))
    assert "api_key_env" in str(e.value)
    assert SECRET not in str(e.value)


@pytest.mark.parametrize(
    "text",
    [
        f"api_key: {SECRET}\n",  # unknown key holding the secret
        f"n: {SECRET}\n",  # wrong type
        f"sampling:\n  top_p: {SECRET}\n",
        f"extra_body: {SECRET}\n",
    ],
)
def test_config_errors_never_echo_values(tmp_path, text):
    path = _yaml(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_stage("generate", path)
    assert SECRET not in str(e.value)


def test_set_errors_never_echo_values():
    with pytest.raises(ConfigError) as e:
        load_stage("generate", sets=[f"concurrency={SECRET}"])
    assert "concurrency" in str(e.value)
    assert SECRET not in str(e.value)


def test_eval_stays_greedy_when_one_sampling_key_is_overridden():
    cfg = load_stage("eval", None, {}, ["sampling.max_tokens=64"])
    assert (cfg.sampling.temperature, cfg.sampling.max_tokens) == (0.0, 64)
    assert load_stage("eval", None, {}, []).sampling.max_tokens == 256
    assert load_stage("generate", None, {}, []).sampling.temperature == 0.7
