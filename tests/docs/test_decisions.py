"""The decision records are numbered once each, and every mention of one names a real file."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DECISIONS = REPO_ROOT / "docs" / "decisions"
MENTION = re.compile(r"docs/decisions/(\d{4}-[\w.-]+?\.md)")
# Where the project's own text lives (not virtualenvs, caches or build output).
SOURCES = ("README.md", "CHANGELOG.md", "pyproject.toml", "Makefile", "Dockerfile", "MANIFEST.in")
SOURCE_FOLDERS = (
    "docs",
    "lepton",
    "operator",
    "scheduler",
    "exporter",
    "tests",
    "bench",
    "scripts",
)


def test_each_decision_has_its_own_number() -> None:
    numbers = Counter(p.name[:4] for p in DECISIONS.glob("[0-9][0-9][0-9][0-9]-*.md"))
    assert numbers, f"no decision records in {DECISIONS}"
    clashes = sorted(n for n, count in numbers.items() if count > 1)
    assert not clashes, f"decision numbers used twice: {clashes}"
    assert sorted(numbers) == [f"{n:04d}" for n in range(1, len(numbers) + 1)], sorted(numbers)


def test_every_mention_of_a_decision_names_a_real_file() -> None:
    files = [REPO_ROOT / name for name in SOURCES]
    for folder in SOURCE_FOLDERS:
        files += (p for p in (REPO_ROOT / folder).rglob("*") if p.suffix in {".py", ".md", ".yaml"})
    broken = []
    for path in files:
        name = path.relative_to(REPO_ROOT)
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            broken += [
                f"{name}:{number}: {m}"
                for m in MENTION.findall(line)
                if not (DECISIONS / m).exists()
            ]
    assert not broken, "mentions of missing decision records:\n" + "\n".join(broken)
