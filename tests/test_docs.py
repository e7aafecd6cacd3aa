"""The user-facing docs: code examples use the public API, and no figure is labelled by a
development session (history lives in git)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "recipes/README.md"])
PRIVATE_IMPORT = re.compile(r"(?:from|import)\s+cp2_engine(?:\.\w+)*\._\w+")
SESSION_LABEL = re.compile(r"\b(?:session|sprint|iteration)[ -]?\d+\b", re.I)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_examples_import_public_names_only(doc):
    assert PRIVATE_IMPORT.findall(doc.read_text()) == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_development_session_labels(doc):
    assert SESSION_LABEL.findall(doc.read_text()) == []


def test_readme_links_exist():
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(((?:docs|sample_data|recipes|benchmarks)/[^)#]+)\)", text)
    assert targets, "the README links its docs"
    assert [t for t in targets if not (ROOT / t).exists()] == []


def test_relative_links_in_docs_exist():
    """Every relative link in the docs (development pages included) points at a file."""
    pages = [*DOCS, *(ROOT / "docs" / "development").glob("*.md")]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path = target.split("#")[0]
            external = target.startswith(("http://", "https://", "mailto:"))
            if path and not external and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_bundled_models_page_is_user_facing():
    """docs/bundled_models.md keeps the generated validation tables and no dated lab notes; the
    dated experiments live in docs/development/history.md, which it links."""
    text = (ROOT / "docs" / "bundled_models.md").read_text()
    begin, end = "<!-- validation-tables:begin", "<!-- validation-tables:end -->"
    assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end)
    hand_written = text[: text.index(begin)] + text[text.index(end) :]
    assert re.findall(r"\b20\d\d-\d\d-\d\d\b", hand_written) == []
    assert "development/history.md" in hand_written
    assert (ROOT / "docs" / "development" / "history.md").is_file()
