"""lepton/data/README.md describes every shipped data file with the columns it really has."""

from __future__ import annotations

import csv
import re

from lepton.data import data_dir

DATA = data_dir()
README = DATA / "README.md"


def _expand_braces(pattern: str) -> list[str]:
    """``summary_power_{a40,v100}.csv`` -> both names."""
    match = re.search(r"\{([^}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [n for part in match[1].split(",") for n in _expand_braces(head + part + tail)]


def _expand_range(column: str) -> list[str]:
    """``power_limit_0..3`` -> ``power_limit_0`` … ``power_limit_3``."""
    match = re.fullmatch(r"(.*?)(\d+)\.\.(\d+)", column)
    if not match:
        return [column]
    return [f"{match[1]}{i}" for i in range(int(match[2]), int(match[3]) + 1)]


def documented_columns(readme: str) -> dict[str, list[str]]:
    """Each file the README's tables name, with the columns they give it."""
    documented: dict[str, list[str]] = {}
    previous: list[str] = []
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 2:
            continue
        quoted = re.findall(r"`([^`]*)`", cells[-1])
        if cells[-1].startswith("the same columns"):
            columns = previous
        else:
            columns = [c for part in quoted[0].split(",") for c in _expand_range(part)]
        previous = columns
        for name in _expand_braces(re.findall(r"`([^`]*)`", cells[0])[0]):
            documented[name] = columns
    return documented


def test_the_parser_reads_braces_ranges_and_repeats() -> None:
    table = (
        "| file | columns |\n|---|---|\n"
        "| `p_{x,y}.csv` | `a,b_0..2,c` (W) |\n"
        "| `q.csv` | the same columns; a variant |\n"
    )
    expected = ["a", "b_0", "b_1", "b_2", "c"]
    assert documented_columns(table) == {
        "p_x.csv": expected,
        "p_y.csv": expected,
        "q.csv": expected,
    }


def test_every_data_file_is_described_with_its_real_columns() -> None:
    documented = documented_columns(README.read_text())
    files = sorted(p for p in DATA.rglob("*.csv"))
    assert files, f"no data in {DATA}"
    wrong = []
    for path in files:
        with path.open(newline="") as handle:
            header = next(csv.reader(handle))
        if path.name not in documented:
            wrong.append(f"{path.name}: not in the README")
        elif documented[path.name] != header:
            wrong.append(f"{path.name}: README says {documented[path.name]}, the file has {header}")
    assert not wrong, "\n".join(wrong)
    assert not set(documented) - {p.name for p in files}, "the README names files not shipped"
