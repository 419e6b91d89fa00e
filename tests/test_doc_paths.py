"""Every documentation path the code and the docs name exists: a renamed or missing document
(``docs/MODEL.md`` for ``docs/model.md``, a notes file users never had) fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: A repository path with a folder (``docs/model.md``, ``deploy/GUIDE.md``, ``bench/x.py``)
#: or a top-level document in capitals (``BENCHMARKS.md``).
PATH = re.compile(
    r"(?<![\w/.-])((?:docs|deploy|bench|data_build|tests)/[\w./-]*\w\.(?:md|py|json|yml|sh)"
    r"|[A-Z]+\.md)\b"
)
#: Documents named relative to where they live (each scenario's own PROVENANCE.md).
LOCAL = {"PROVENANCE.md"}
#: Where a document named by its bare name (``GUIDE.md``) may be.
FOLDERS = (ROOT, ROOT / "docs", ROOT / "deploy")


def _sources() -> list[Path]:
    files = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "deploy" / "GUIDE.md",
    ]
    for folder in ("common", "coordinator", "site_agent", "thermoroute", "bench", "tests"):
        files += sorted(p for p in (ROOT / folder).rglob("*.py") if p.is_file())
    return [f for f in files if f != Path(__file__).resolve()]


def _named(path: Path) -> set[str]:
    return set(PATH.findall(path.read_text(encoding="utf-8"))) - LOCAL


@pytest.mark.parametrize("source", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_named_document_exists(source: Path) -> None:
    missing = sorted(
        name
        for name in _named(source)
        if not any((folder / name).exists() for folder in (FOLDERS if "/" not in name else (ROOT,)))
    )
    assert missing == [], f"{source.relative_to(ROOT)} names {missing}"


def test_the_checker_finds_paths_and_capitals(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("see docs/MODEL.md §3 and NOTES.md, not my/docs/x.md\n")
    assert _named(sample) == {"docs/MODEL.md", "NOTES.md"}
