"""One of each: every Kubernetes name is defined once, every hardware adapter exists once.

``lepton/core/names.py`` is the one home of the API group, labels, annotations,
resource names and the scheduler profile; ``lepton/hw`` the one home of the NVML
and RAPL adapters. These tests fail on a second definition anywhere in the
packages: a literal ``lepton.dev/``, ``nvidia.com/gpu`` or ``lepton-scheduler``
in code (docstrings and comments may say them), a module-level constant that
redefines or renames one of the names, or a second class of the adapters' errors.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from lepton.core import names

REPO = Path(__file__).resolve().parent.parent
# The shipped packages, and the benchmarks and scripts that build the same objects.
PACKAGES = [
    REPO / "lepton",
    REPO / "bench",
    REPO / "scripts",
    REPO / "operator" / "lepton_operator",
    REPO / "scheduler" / "lepton_scheduler",
    REPO / "exporter" / "lepton_exporter",
]
NAMES_MODULE = REPO / "lepton" / "core" / "names.py"
GENERATED = ("api_pb2.py", "api_pb2_grpc.py")
# What a literal must not contain outside the names module.
NAME_MARKERS = (
    "lepton.dev/",
    "nvidia.com/gpu",
    "nvidia.com/mig-",
    "lepton-scheduler",
    "LeptonScored",
)
NAME_CONSTANTS = {n for n in vars(names) if n.isupper()}
# Every name's value (the well-known Kubernetes labels too): a literal equal to one is a copy.
NAME_VALUES = {
    value: name for name, value in vars(names).items() if name.isupper() and isinstance(value, str)
}

# typing.Literal needs the literal itself; test_api_version_literals_match checks it. The
# Lepton scheduler's dashboard is named lepton-<component> like the others: a uid and a file
# name, not the kube-scheduler profile's name that it shares a spelling with.
LITERAL_TYPES = {
    "lepton/api/v1alpha1.py": {names.API_VERSION},
    "scripts/deploy_assets.py": {"lepton-scheduler", "lepton-scheduler.json"},
}


def package_files() -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            if path.name not in GENERATED and path != NAMES_MODULE:
                files.append(path)
    return files


def _docstring_nodes(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def name_literals(path: Path) -> list[str]:
    """The string literals in ``path``'s code (not its docstrings) that spell a Lepton name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = _docstring_nodes(tree)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and (any(marker in node.value for marker in NAME_MARKERS) or node.value in NAME_VALUES)
    ]


def test_lepton_names_are_spelled_only_in_the_names_module() -> None:
    unexpected: dict[str, list[str]] = {}
    for path in package_files():
        key = path.relative_to(REPO).as_posix()
        allowed = LITERAL_TYPES.get(key, set())
        extra = [literal for literal in name_literals(path) if literal not in allowed]
        if extra:
            unexpected[key] = extra
    assert not unexpected, (
        f"import these from lepton.core.names instead of spelling them out: {unexpected}"
    )


def test_the_scan_flags_a_spelled_name_but_not_a_docstring(tmp_path: Path) -> None:
    module = tmp_path / "second.py"
    module.write_text(
        '"""Pods of the lepton-scheduler profile request nvidia.com/gpu."""\n'
        'RESOURCE = "nvidia.com/gpu"\n'
        'LABEL = f"lepton.dev/{1}"\n'
        'ZONE = "topology.kubernetes.io/zone"\n'
    )
    assert sorted(name_literals(module)) == [
        "lepton.dev/",
        "nvidia.com/gpu",
        "topology.kubernetes.io/zone",
    ]


def _module_level_constants(path: Path) -> list[tuple[str, ast.expr]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        for target in targets:
            elements = target.elts if isinstance(target, ast.Tuple) else [target]
            for element in elements:
                if isinstance(element, ast.Name):
                    found.append((element.id, node.value))  # type: ignore[arg-type]
    return found


def test_no_module_redefines_or_renames_a_name() -> None:
    """No ``GROUP = ...`` beside lepton.core.names, and no ``ALIAS = SCHEDULER_NAME``."""
    offenders = []
    for path in package_files():
        for target, value in _module_level_constants(path):
            renamed = isinstance(value, ast.Name) and value.id in NAME_CONSTANTS
            key = path.relative_to(REPO).as_posix()
            if target in NAME_CONSTANTS or renamed or _builds_a_name(value):
                offenders.append(f"{key}: {target}")
    assert not offenders, f"import the name from lepton.core.names: {offenders}"


def _builds_a_name(value: ast.expr) -> bool:
    """``f"{GROUP}/..."`` or ``GROUP + "/..."``: a new name composed outside the names module."""
    return isinstance(value, ast.JoinedStr | ast.BinOp) and any(
        isinstance(node, ast.Name) and node.id in {"GROUP", "RESOURCE_GPU"}
        for node in ast.walk(value)
    )


def _renaming_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{alias.name} as {alias.asname}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "lepton.core.names"
        for alias in node.names
        if alias.asname and alias.asname != alias.name
    ]


def test_no_module_imports_a_name_under_another_name() -> None:
    """``import SCHEDULER_NAME as DEFAULT_SCHEDULER_NAME`` gives one name a second one."""
    tests = list((REPO / "tests").rglob("*.py"))
    offenders = {
        path.relative_to(REPO).as_posix(): renamed
        for path in [*package_files(), *tests]
        if (renamed := _renaming_imports(path))
    }
    assert not offenders, f"use the names module's own names: {offenders}"


def test_the_scans_flag_a_renamed_import_and_a_composed_name(tmp_path: Path) -> None:
    module = tmp_path / "second.py"
    module.write_text(
        "from lepton.core.names import GROUP, SCHEDULER_NAME as PROFILE\n"
        'LABEL_OWN = f"{GROUP}/own"\n'
        "SCORE = 10\n"
    )
    assert _renaming_imports(module) == ["SCHEDULER_NAME as PROFILE"]
    built = [t for t, v in _module_level_constants(module) if _builds_a_name(v)]
    assert built == ["LABEL_OWN"]


def test_api_version_literals_match_the_names_module() -> None:
    from lepton.api.v1alpha1 import EnergyBudget, LeptonJob

    for model in (EnergyBudget, LeptonJob):
        assert model.model_fields["api_version"].default == names.API_VERSION


@pytest.mark.parametrize("error", ["NvmlUnavailableError", "PowerLimitError"])
def test_each_hardware_error_is_defined_once(error: str) -> None:
    defined = Counter(
        path.relative_to(REPO).as_posix()
        for path in package_files()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name == error
    )
    assert dict(defined) == {"lepton/hw/nvml.py": 1}


# What must exist once, where, and whether the tests count (a second fake NVML in the
# tests is a duplicate; a test calling the fake's nvmlInit is not).
ADAPTER_HOMES = {
    "class FakeNvml": ("lepton/hw/fake_nvml.py", True),
    "def find_package_zones": ("lepton/hw/rapl.py", True),
    "def list_zones": ("lepton/hw/rapl.py", True),
    "nvmlInit()": ("lepton/hw/nvml.py", False),
    # The v1 setter and its read-back, written once (the GPU check runs that very code).
    "nvmlDeviceSetPowerManagementLimit(": ("lepton/hw/nvml.py", False),
}


@pytest.mark.parametrize("adapter", sorted(ADAPTER_HOMES))
def test_each_hardware_adapter_exists_once(adapter: str) -> None:
    """One fake NVML, one RAPL zone walk, one place in the packages that initialises NVML."""
    home, with_tests = ADAPTER_HOMES[adapter]
    tests = [p for p in (REPO / "tests").rglob("*.py") if p != Path(__file__)]
    where = {
        path.relative_to(REPO).as_posix()
        for path in [*package_files(), *(tests if with_tests else [])]
        if adapter in path.read_text()
    }
    # The fake defines every call; the GPU check calls nvmlInit itself (a missing NVML is
    # its own exit code), and only that.
    where -= {"lepton/hw/fake_nvml.py"} - {home}
    if adapter == "nvmlInit()":
        where -= {"exporter/lepton_exporter/gpucheck.py"}
    assert where == {home}


def test_settings_classes_are_all_called_config() -> None:
    """One word per idea: a component's or a run's settings are a ``…Config`` class."""
    settings = [
        f"{path.relative_to(REPO).as_posix()}: {node.name}"
        for path in package_files()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name.endswith("Settings")
    ]
    assert not settings, f"call these …Config, like the others: {settings}"


# Helpers that exist once in the packages, the benchmarks and the tests: where, the other
# names a second copy has had, and whether only the tests are looked at (the demo's own
# stoppable, status-showing wait is not the tests' wait_for).
ONE_HELPER = {
    "wait_for": ("tests/support/wait.py", {"_wait", "wait_until"}, True),
    "free_port": ("lepton/cluster/processes.py", {"_free_port"}, False),
    "api_client": ("lepton/kube.py", {"load_client", "load_kube_config"}, False),
    "rss_bytes": ("lepton/cluster/processes.py", {"_rss_bytes"}, False),
}


@pytest.mark.parametrize("helper", sorted(ONE_HELPER))
def test_each_helper_is_defined_once(helper: str) -> None:
    """One polling helper, one free-port finder, one Kubernetes client factory."""
    home, aliases, tests_only = ONE_HELPER[helper]
    tests = list((REPO / "tests").rglob("*.py"))
    where = {
        f"{path.relative_to(REPO).as_posix()}: {node.name}"
        for path in [*([] if tests_only else package_files()), *tests]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name in {helper, *aliases}
    }
    assert where == {f"{home}: {helper}"}


# The names a second one is composed of, and the separators that compose one.
NAME_PARTS = {"GROUP", "VERSION", "RESOURCE_GPU"}


def composed_names(path: Path) -> list[str]:
    """F-strings anywhere in ``path`` that join a name part to another with ``/`` or ``.``:
    ``f"{GROUP}/{VERSION}"`` is API_VERSION spelled again, ``f"{plural}.{GROUP}"`` a CRD name.
    A name in running text (``f"request {RESOURCE_GPU} in the pod"``) is not one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.JoinedStr):
            continue
        parts = node.values
        for i, part in enumerate(parts):
            if not (isinstance(part, ast.FormattedValue) and _part_name(part.value) in NAME_PARTS):
                continue
            before = parts[i - 1] if i > 0 else None
            after = parts[i + 1] if i + 1 < len(parts) else None
            joined = (
                isinstance(before, ast.Constant) and str(before.value).endswith(("/", "."))
            ) or (isinstance(after, ast.Constant) and str(after.value).startswith(("/", ".")))
            if joined:
                found.append(ast.unparse(node))
                break
    return found


def _part_name(value: ast.expr) -> str:
    """``GROUP`` for ``GROUP`` and for ``names.GROUP``."""
    if isinstance(value, ast.Attribute):
        return value.attr
    return value.id if isinstance(value, ast.Name) else ""


# The CRDs' names (``energybudgets.lepton.dev``): their plurals are spelled in every
# module that lists or watches them (the operator, the Lepton scheduler, kubectl lepton, the demo,
# the benchmarks) and have no name in lepton.core.names yet (issue 15's review).
CRD_NAMES_LEFT = {"lepton/api/crdgen.py", "lepton/kubectl.py", "bench/bench_admission.py"}


def test_no_name_is_composed_outside_the_names_module() -> None:
    offenders = {
        key: found
        for path in package_files()
        if (found := composed_names(path))
        and (key := path.relative_to(REPO).as_posix()) not in CRD_NAMES_LEFT
    }
    assert not offenders, f"use (or add) the composed name in lepton.core.names: {offenders}"


def _aliased_attributes(path: Path) -> list[str]:
    """``PROFILE = names.SCHEDULER_NAME``: a name renamed through the module."""
    return [
        f"{target} = {ast.unparse(value)}"
        for target, value in _module_level_constants(path)
        if isinstance(value, ast.Attribute) and value.attr in NAME_CONSTANTS
    ]


def test_no_module_renames_a_name_through_the_names_module() -> None:
    offenders = [f for path in package_files() for f in _aliased_attributes(path)]
    assert not offenders, f"use the names module's own names: {offenders}"


def test_the_scans_flag_a_composed_api_version_and_an_alias_through_the_module(
    tmp_path: Path,
) -> None:
    module = tmp_path / "second.py"
    module.write_text(
        "from lepton.core import names\n"
        "from lepton.core.names import GROUP, RESOURCE_GPU, VERSION\n"
        "PROFILE = names.SCHEDULER_NAME\n"
        "def ref(kind, plural):\n"
        '    crd = f"{plural}.{names.GROUP}"\n'
        '    hint = f"request {RESOURCE_GPU} in the pod"\n'
        '    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind}\n'
    )
    assert composed_names(module) == ["f'{plural}.{names.GROUP}'", "f'{GROUP}/{VERSION}'"]
    assert _aliased_attributes(module) == ["PROFILE = names.SCHEDULER_NAME"]


def test_the_simulator_weighs_the_extender_as_the_profile_does() -> None:
    """The simulator's lepton-scheduler profile and the real one share one extender weight
    (lepton.sim may not import the Lepton scheduler's package, so the two are tied here)."""
    from lepton_scheduler.config import kube_scheduler_config

    from lepton.sim.policies import EXTENDER_WEIGHT

    config = kube_scheduler_config("http://127.0.0.1:1", "/kubeconfig")
    assert [e["weight"] for e in config["extenders"]] == [EXTENDER_WEIGHT]


# Constants each script keeps for itself: its own folder.
OWN_CONSTANTS = {"REPO"}
# The Lepton scheduler's and the exporter's list-and-watch loops each keep a watch timeout; they
# are two informers, one idea, left to a shared one in lepton.kube (issue 15's review).
CONSTANTS_LEFT = {"WATCH_TIMEOUT_SECONDS"}


def constant_copies(paths: list[Path], root: Path = REPO) -> dict[str, list[str]]:
    """Module-level constants defined with the same name and the same value in two modules."""
    where: dict[tuple[str, str], list[str]] = {}
    for path in paths:
        for target, value in _module_level_constants(path):
            if target.isupper() and value is not None:
                key = (target, ast.unparse(value))
                where.setdefault(key, []).append(path.relative_to(root).as_posix())
    return {
        f"{name} = {value}": sorted(files)
        for (name, value), files in where.items()
        if len(set(files)) > 1
    }


def test_no_constant_is_defined_twice() -> None:
    """``JOULES_PER_WATT_HOUR = 3600.0`` once, not in each module that converts."""
    copies = {
        constant: files
        for constant, files in constant_copies(package_files()).items()
        if constant.split(" = ")[0] not in OWN_CONSTANTS | CONSTANTS_LEFT
    }
    assert not copies, f"define these once and import them: {copies}"


def test_the_constant_scan_flags_a_copy(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("FULL_GPU_MILLI = 1000\nLIMIT = 1\n")
    (tmp_path / "b.py").write_text("FULL_GPU_MILLI = 1000\nLIMIT = 2\n")
    files = [tmp_path / "a.py", tmp_path / "b.py"]
    assert constant_copies(files, tmp_path) == {"FULL_GPU_MILLI = 1000": ["a.py", "b.py"]}


# The kubernetes client's own loaders: only the one factory calls them.
CLIENT_LOADERS = {
    "load_kube_config",
    "load_incluster_config",
    "new_client_from_config",
    "ApiClient",
}


def client_loader_calls(path: Path) -> list[str]:
    """The calls in ``path`` that build a Kubernetes client without lepton.kube."""
    return [
        name
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.Call) and (name := _called_name(node.func)) in CLIENT_LOADERS
    ]


def _called_name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def test_kubernetes_clients_come_from_the_one_factory() -> None:
    """Every ApiClient is lepton.kube.api_client's: no module loads a kubeconfig itself."""
    where = {
        path.relative_to(REPO).as_posix(): calls
        for path in package_files()
        if (calls := client_loader_calls(path))
    }
    assert set(where) == {"lepton/kube.py"}, f"use lepton.kube.api_client: {where}"


def test_the_client_scan_flags_a_hand_built_client(tmp_path: Path) -> None:
    module = tmp_path / "second.py"
    module.write_text(
        "from kubernetes import client, config\n"
        "def api(path):\n"
        "    config.load_kube_config(path)\n"
        "    return client.CoreV1Api(config.new_client_from_config(config_file=path))\n"
    )
    assert sorted(client_loader_calls(module)) == ["load_kube_config", "new_client_from_config"]


def test_api_times_are_read_in_one_place() -> None:
    """RFC 3339 from the API is parsed by lepton.core.times.parse_time, not by hand."""
    by_hand = {
        path.relative_to(REPO).as_posix()
        for path in package_files()
        if 'replace("Z", "+00:00")' in path.read_text()
    }
    assert by_hand == {"lepton/core/times.py"}


def test_reserved_means_one_reservations_estimate() -> None:
    """A reservation's "reserved" is its estimate; what reservations still hold is "held"."""
    from lepton.api.v1alpha1 import EnergyBudgetStatus, Reservation
    from lepton.core.budget import BudgetState
    from lepton.core.budget import Reservation as CoreReservation

    assert "reserved_watt_hours" in CoreReservation.__dataclass_fields__
    assert "reserved_watt_hours" in Reservation.model_fields
    assert not hasattr(BudgetState, "reserved_watt_hours")
    assert "reserved_watt_hours" not in EnergyBudgetStatus.model_fields
    # The published status field says "held" too (the printer column: tests/api).
    published = EnergyBudgetStatus.model_json_schema(by_alias=True)["properties"]
    assert "heldWattHours" in published and "reservedWattHours" not in published


# "Extender" names kube-scheduler's side only: the scheduler extender protocol, its wire types
# and the profile's extenders stanza. Lepton's component is the Lepton scheduler (package
# lepton_scheduler, metrics lepton_scheduler_*, chart components scheduler and scheduler-server).
EXTENDER_PROTOCOL_IDENTIFIERS = {
    "ExtenderArgs",  # k8s.io/kube-scheduler/extender/v1's types, decoded by lepton_scheduler
    "decode_extender_args",
    "extender_args",  # the tests' ExtenderArgs builder
    "test_filter_answers_an_extender_filter_result_in_pascal_case",  # ExtenderFilterResult
    "extenders",  # the stanza's entries
    "EXTENDER_VERBS",  # filterVerb / prioritizeVerb
    "EXTENDER_WEIGHT",  # the stanza's weight, and kube-scheduler's scale of extender scores
    "EXTENDER_SCALE",
}
# Prose that names a component "extender"; the protocol's own nouns may follow the word.
EXTENDER_AS_COMPONENT = re.compile(
    r"\b(?:the|Lepton's|our|its) extender\b(?!s\b| stanza| protocol| score| entry| client| verb)",
    re.IGNORECASE,
)
TEXT_ROOTS = ("lepton", "bench", "scripts", "operator", "scheduler", "exporter", "tests", "docs")
TEXT_ROOTS += ("deploy", "examples", "README.md", "pyproject.toml", "Makefile", "Dockerfile")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".tpl", ".txt", ".toml", ""}


def repo_text_files() -> list[Path]:
    """The repo's own text files (no CHANGELOG: its entries name what was renamed)."""
    found: list[Path] = []
    for root in (REPO / name for name in TEXT_ROOTS):
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        found += [
            p
            for p in paths
            if p.is_file()
            and p.suffix in TEXT_SUFFIXES
            and not {"__pycache__", ".venv"} & set(p.parts)
            and not p.name.endswith(".egg-info")
        ]
    return found


def test_extender_names_kube_schedulers_protocol_never_a_lepton_component() -> None:
    files = repo_text_files()
    named = [p.relative_to(REPO).as_posix() for p in files if "extender" in p.name.lower()]
    assert not named, f"files named after an extender component: {named}"

    identifiers: set[str] = set()
    for path in (p for p in files if p.suffix == ".py" and p != Path(__file__).resolve()):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for attr in ("id", "attr", "name", "arg", "asname"):
                value = getattr(node, attr, None)
                if isinstance(value, str) and "extender" in value.lower():
                    identifiers.add(value)
    assert identifiers <= EXTENDER_PROTOCOL_IDENTIFIERS, identifiers - EXTENDER_PROTOCOL_IDENTIFIERS

    prose = {
        f"{p.relative_to(REPO).as_posix()}: {m.group(0)!r}"
        for p in files
        for m in EXTENDER_AS_COMPONENT.finditer(p.read_text(errors="replace"))
    }
    assert not prose, f'say "the Lepton scheduler": {sorted(prose)}'

    # The chart: only kube-scheduler's stanza settings say extender; dashboards never do.
    def keys(tree: object, path: str = "") -> list[str]:
        if not isinstance(tree, dict):
            return []
        return [k for key, v in tree.items() for k in (f"{path}.{key}", *keys(v, f"{path}.{key}"))]

    chart = REPO / "deploy" / "helm" / "lepton"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    extender_keys = [k for k in keys(values) if "extender" in k.lower()]
    assert extender_keys and all(
        k.startswith(".scheduler.kubeScheduler.extender") for k in extender_keys
    ), extender_keys
    assert '"component" "extender"' not in "".join(
        p.read_text() for p in (chart / "templates").iterdir()
    )
    for board in (REPO / "deploy" / "dashboards").glob("*.json"):
        meta = json.loads(board.read_text())
        assert "extender" not in f"{meta['uid']} {meta['title']}".lower(), board.name
