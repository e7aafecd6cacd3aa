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
