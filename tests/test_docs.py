"""The documentation's examples stay true: the README's scan configuration is a valid configuration."""

from __future__ import annotations

import os
import re
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


# Background documents and the team's reference notes are not something a customer can open: what ships (checks,
# templates, docs, code comments, tests) cites Microsoft's public pages instead.
INTERNAL_REFERENCE = re.compile(
    r"\bseeds?\s*(?:\d{3}|documents?)\b"
    r"|\b(?:hma-checks|design|exchange-objects|psrp-and-simulator|graph-and-identity)\.md\b"
    r"|shared/(?:reference|seeds|realdata)\b", re.IGNORECASE)
NOT_SHIPPED = {".git", ".venv", "out", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache",
               ".ruff_cache"}
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".j2", ".css", ".ps1", ".toml", ".txt", ".json", ""}


def _shipped_text_files():
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = sorted(name for name in subfolders if name not in NOT_SHIPPED)
        for name in sorted(files):
            path = Path(folder) / name
            if path.suffix in TEXT_SUFFIXES and path.stat().st_size < 2_000_000:
                yield path


def test_the_detector_finds_internal_references():
    seed, md = "seed", ".md"     # split, so these examples do not trip the scan of this very file
    for text in (f"as in {seed} 003", f"({seed}s 000 and 002)", f"see hma-checks{md} P1", "../shared/" "reference/x",
                 f"design{md}", f"{seed.title()} 003, \"Name Mismatches\""):
        assert INTERNAL_REFERENCE.search(text), text
    for text in ("random seed", "seed=42", "https://learn.microsoft.com/exchange/", "docs/writing-checks.md"):
        assert not INTERNAL_REFERENCE.search(text), text


def test_nothing_shipped_cites_internal_documents():
    """checks.yaml, templates, docs, comments and tests cite Microsoft's pages, never the team's notes."""
    found = []
    for path in _shipped_text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if INTERNAL_REFERENCE.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert len(list(_shipped_text_files())) > 100, "the walk must see the repository"
    assert found == [], "\n".join(found)
