"""The repository stands on its own: nothing refers to the team's shared shelf, and shipped
code finds its files as package resources, never by walking up from ``__file__``."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Developer tools that only ever run from a clone and locate its root from __file__. Everything
# else (the four shipped packages, examples/) finds its files as package resources.
REPO_TOOLS = ("tests", "bench", "scripts")
# Folders that are not the project's sources: virtualenvs, caches, build output.
NOT_SOURCES = {".git", ".venv", "build", "dist", "results", "node_modules"}
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".sh", ".json", ".cfg", ".tpl", ""}

# The team's reference shelf beside the clone; spelled in pieces so this file does not match.
SHARED = "shar" + "ed"
SHELF = re.compile(
    "|".join(
        [
            *(
                re.escape(p)
                for p in (
                    f"../{SHARED}",
                    f"{SHARED}/data",
                    f"{SHARED}/notes",
                    f"LEPTON_{SHARED.upper()}",
                )
            ),
            # the shelf joined as a path component: `REPO.parent / "…"`, `Path("..", "…")`
            rf"""[/,(]\s*["']{SHARED}["']""",
        ]
    )
)
# Path arithmetic from a module's own location: `__file__`, its spec's origin, or a
# package's resource folder walked up from (`files("lepton").parent`, `/ ".."`).
FROM_FILE = re.compile(
    "|".join(
        (
            r"__file__|__spec__|__path__|getsourcefile|inspect\.getfile|\.origin\b",
            r"files\([^)]*\)\s*\.parent",
            r"""joinpath\(\s*["']\.\.""",
            r"""/\s*["']\.\.["']""",
        )
    )
)


def _source_files(root: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(
            p in NOT_SOURCES
            or (p.startswith(".") and p != ".github")
            or p.endswith(".egg-info")
            or p == "__pycache__"
            for p in parts[:-1]
        ):
            continue
        if path.is_file() and path.suffix in TEXT_SUFFIXES and path.name != ".DS_Store":
            found.append(path)
    return found


def shelf_references(root: Path) -> list[str]:
    """``file:line`` of every mention of the shared shelf (its path, data, notes, variable)."""
    hits = []
    for path in _source_files(root):
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if SHELF.search(line):
                hits.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return hits


def paths_from_file(root: Path, tools: tuple[str, ...] = REPO_TOOLS) -> list[str]:
    """``file:line`` of every use of ``__file__`` in Python outside the clone-only tools."""
    hits = []
    for path in _source_files(root):
        if path.suffix != ".py" or path.relative_to(root).parts[0] in tools:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FROM_FILE.search(line):
                hits.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return hits


def test_nothing_in_the_repository_refers_to_the_shared_shelf() -> None:
    hits = shelf_references(REPO_ROOT)
    assert not hits, (
        "nothing may read the shared shelf beside the clone (the data is lepton/data):\n"
        + "\n".join(hits)
    )


def test_shipped_code_finds_its_files_as_package_resources() -> None:
    hits = paths_from_file(REPO_ROOT)
    assert not hits, (
        "code outside the clone-only tools (tests/, bench/, scripts/) builds paths from its own "
        "location (__file__, __path__, a resource folder's parent); use importlib.resources "
        "(docs/decisions/0007-what-the-wheel-ships.md):\n" + "\n".join(hits)
    )


def test_the_scans_name_the_offending_file(tmp_path: Path) -> None:
    package = tmp_path / "lepton" / "sub"
    package.mkdir(parents=True)
    (package / "paths.py").write_text('CRDS = Path(__file__).resolve().parents[2] / "crds"\n')
    (package / "walks_up.py").write_text(
        'A = resources.files("lepton").parent / "crds"\n'
        'B = resources.files("lepton") / ".." / "crds"\n'
        "C = Path(__spec__.origin).parent\n"
        'D = resources.files("lepton").joinpath("../crds")\n'
        "F = Path(lepton.__path__[0]).parent\n"
        "G = Path(inspect.getsourcefile(lepton)).parent\n"
        'E = resources.files("lepton").joinpath("crds")\n'
    )
    (package / "beside.py").write_text(f'DATA = REPO.parent / "{SHARED}" / "data"\n')
    (tmp_path / "README.md").write_text(f"ok\nsee ../{SHARED}/data/traces\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "x.py").write_text(f"../{SHARED}\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "helper.py").write_text("REPO = Path(__file__).parents[1]\n")
    assert paths_from_file(tmp_path) == [
        'lepton/sub/paths.py:1: CRDS = Path(__file__).resolve().parents[2] / "crds"',
        'lepton/sub/walks_up.py:1: A = resources.files("lepton").parent / "crds"',
        'lepton/sub/walks_up.py:2: B = resources.files("lepton") / ".." / "crds"',
        "lepton/sub/walks_up.py:3: C = Path(__spec__.origin).parent",
        'lepton/sub/walks_up.py:4: D = resources.files("lepton").joinpath("../crds")',
        "lepton/sub/walks_up.py:5: F = Path(lepton.__path__[0]).parent",
        "lepton/sub/walks_up.py:6: G = Path(inspect.getsourcefile(lepton)).parent",
    ]
    assert shelf_references(tmp_path) == [
        f"README.md:2: see ../{SHARED}/data/traces",
        f'lepton/sub/beside.py:1: DATA = REPO.parent / "{SHARED}" / "data"',
    ]


def test_the_design_cards_folders_show_the_packaged_crds_and_examples() -> None:
    # crds/ is fixed by the design card; the files live once, in the package
    root = Path(__file__).resolve().parents[2]
    crds = sorted(p.name for p in (root / "crds").glob("*.yaml"))
    assert crds and crds == sorted(p.name for p in (root / "lepton/api/crds").glob("*.yaml"))
    assert (root / "crds").resolve() == (root / "lepton/api/crds").resolve()
    for manifest in (root / "lepton/examples").glob("*.yaml"):
        assert (root / "examples" / manifest.name).resolve() == manifest.resolve()
    assert (root / "examples/services").resolve() == (root / "lepton/examples/services").resolve()
