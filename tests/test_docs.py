"""The README's config reference is exactly what the config classes say (`make docs` rewrites it)."""

import re
from pathlib import Path

from seqdistill.config import GenerateConfig, reference_markdown

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_readme_config_reference_is_current():
    m = re.search(r"<!-- config-keys:start -->\n(.*?)<!-- config-keys:end -->", README, flags=re.S)
    assert m, "README lacks the config-keys markers"
    assert m.group(1) == reference_markdown(), "README's config reference is stale: run `make docs`"


def test_reference_lists_every_generate_key():
    text = reference_markdown()
    for name in GenerateConfig.model_fields:
        assert f"| `{name}` |" in text or name in ("prompts", "sampling"), name


def test_readme_starts_with_the_two_commands():
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make demo", "make test"]
