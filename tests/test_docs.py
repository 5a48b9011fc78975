"""The README documents every config key (the table is written from the pydantic fields' descriptions)."""

from pathlib import Path

from pydantic import BaseModel

from seqdistill.config import EvalConfig, FilterConfig, GenerateConfig, PromptsConfig, SamplingConfig, TrainConfig

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def _leaf_fields(cls: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in cls.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            continue
        names.append(prefix + name)
    return names


def test_every_config_key_is_in_the_readme():
    keys = _leaf_fields(GenerateConfig) + _leaf_fields(PromptsConfig, "prompts.")
    keys += _leaf_fields(SamplingConfig, "sampling.") + _leaf_fields(FilterConfig) + _leaf_fields(TrainConfig)
    keys += ["check", "prompt", "run_dir"]
    missing = [k for k in keys if f"| `{k}` |" not in README]
    assert not missing, f"README lacks config keys: {missing}"
    assert set(EvalConfig.model_fields) - set(GenerateConfig.model_fields) == {"check", "prompt"}


def test_readme_starts_with_the_two_commands():
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make demo", "make test"]
