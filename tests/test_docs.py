"""The docs match the code: the config reference is what the config classes say (`make docs` rewrites it),
the README stays short and every link in it and in docs/ points at a file that exists."""

import re
from pathlib import Path

from seqdistill.config import GenerateConfig, reference_markdown

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIG_DOC = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")


def test_readme_config_reference_is_current():
    m = re.search(r"<!-- config-keys:start -->\n(.*?)<!-- config-keys:end -->", CONFIG_DOC, flags=re.S)
    assert m, "docs/config.md lacks the config-keys markers"
    assert m.group(1) == reference_markdown(), "docs/config.md is stale: run `make docs`"


def test_reference_lists_every_generate_key():
    text = reference_markdown()
    for name in GenerateConfig.model_fields:
        assert f"| `{name}` |" in text or name in ("prompts", "sampling"), name


def test_readme_starts_with_the_two_commands():
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make demo", "make test"]


def test_readme_is_short():
    assert len(README.splitlines()) <= 200, "keep the README to what a newcomer needs; move the rest to docs/"


def test_relative_links_point_at_existing_files():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"
