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
    assert list(config.sections) == ["exchange", "os", "graph", "probes"]


def test_every_document_the_readme_links_exists():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    import re

    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / target).is_file(), target


def test_the_evidence_doc_says_what_verify_proves_without_a_pinned_signature(tmp_path):
    """Before, docs/evidence.md claimed a swapped and rehashed evidence.json "is still caught": it is not when
    findings.json is edited too. The doc now says so, and this is the forgery it describes."""
    import hashlib
    import json

    from click.testing import CliRunner

    from hma_check.cli import cli
    from hma_check.commands.pipeline import run_report
    from tests.support import baseline
    from tests.support.baseline import apply_ops

    text = (REPO / "docs" / "evidence.md").read_text(encoding="utf-8")
    assert "is still caught" not in text and "What verify proves without a signature" in text
    baseline.build().save(tmp_path / "evidence.json")
    run_report(tmp_path / "evidence.json", tmp_path / "run")
    folder = tmp_path / "run"
    forged = apply_ops(baseline.build(), [{"set": ["exchange.organization_config", "OAuth2ClientProfileEnabled"],
                                           "to": True}])
    forged.save(folder / "evidence.json")
    digest = hashlib.sha256((folder / "evidence.json").read_bytes()).hexdigest()
    findings = json.loads((folder / "findings.json").read_text(encoding="utf-8"))
    findings["metadata"]["evidence_sha256"] = digest
    (folder / "findings.json").write_text(json.dumps(findings), encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    for name in ("evidence.json", "findings.json"):
        payload = (folder / name).read_bytes()
        manifest["files"][name].update(sha256=hashlib.sha256(payload).hexdigest(), size=len(payload))
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = CliRunner().invoke(cli, ["verify", str(folder)])
    assert result.exit_code == 0 and "verified (unsigned" in result.output
