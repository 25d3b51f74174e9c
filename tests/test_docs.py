"""The documentation's examples stay true: the README's scan configuration is a valid configuration."""

from __future__ import annotations

from pathlib import Path

from hma_check.collect.config import load_config_text

REPO = Path(__file__).resolve().parent.parent


def test_the_readme_scan_configuration_is_valid(tmp_path):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("```yaml", 1)[1].split("```", 1)[0]
    yaml_text = "\n".join(line[3:] if line.startswith("   ") else line for line in block.splitlines())
    (tmp_path / "hma-check.pem").write_text("placeholder: the configuration only checks that the file exists\n")
    config = load_config_text(yaml_text, source="README.md", base_dir=tmp_path)
    assert list(config.sections) == ["exchange", "os", "graph", "probes", "logs"]


def test_every_document_the_readme_links_exists():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    import re

    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / target).is_file(), target
