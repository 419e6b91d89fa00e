"""Package boundaries, checked on the source: everything is imported under the one root
``thermoroute`` (``thermoroute.common``, ``thermoroute.coordinator``,
``thermoroute.site_agent``: the repository's top-level folders, linked into the root),
``common`` knows nothing of Ray, the coordinator never imports the site agent (so it cannot
reach a site's data loaders), and the generic modules (the file writers, the ``/metrics``
server) and the scenario format import nothing of the product."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module name imported anywhere in ``path`` (also inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return names


def _hits(package: str, forbidden: str) -> list[str]:
    bad = []
    for path in _modules(package):
        for name in _imports(path):
            if name == forbidden or name.startswith(forbidden + "."):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


def test_packages_exist() -> None:
    assert _modules("common") and _modules("coordinator")


def test_common_never_imports_ray() -> None:
    assert _hits("common", "ray") == []


def test_coordinator_never_imports_site_agent() -> None:
    assert _hits("coordinator", "thermoroute.site_agent") == []


FOLDERS = ["common", "coordinator", "site_agent", "thermoroute", "tests", "bench", "data_build"]


@pytest.mark.parametrize("folder", FOLDERS)
@pytest.mark.parametrize("top_level", ["common", "coordinator", "site_agent"])
def test_nothing_imports_a_folder_as_a_top_level_package(folder: str, top_level: str) -> None:
    # Installed, only ``thermoroute`` exists; from a checkout a top-level name would import a
    # second copy of the same module (or another distribution's ``common``).
    assert _hits(folder, top_level) == []


def test_the_folders_are_the_root_s_subpackages() -> None:
    for folder in ("common", "coordinator", "site_agent"):
        link = ROOT / "thermoroute" / folder
        assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve()


@pytest.mark.parametrize("module", ["coordinator.admm", "coordinator.acceleration"])
def test_algorithm_modules_are_ray_free(module: str) -> None:
    path = ROOT / (module.replace(".", "/") + ".py")
    assert not any(n == "ray" or n.startswith("ray.") for n in _imports(path))


@pytest.mark.parametrize(
    "module",
    ["common/atomic_files.py", "common/exact_csv.py", "common/metrics_server.py"],
)
def test_generic_modules_know_nothing_of_the_product(module: str) -> None:
    # The file writers and the /metrics server serve scenarios, outputs, checkpoints, the
    # coordinator and the site agents alike; a product import would tie them to one of them.
    assert not any(n.startswith("thermoroute") for n in _imports(ROOT / module))


def test_the_scenario_format_is_the_bottom_layer() -> None:
    # Every reader, writer and the site agent's loader build on the format; it builds on none.
    imported = _imports(ROOT / "common" / "scenario_format.py")
    assert not any(n.startswith("thermoroute") for n in imported)


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text(
        "def f():\n    import ray.util\n    from thermoroute.site_agent.data import x\n"
    )
    assert {"ray.util", "thermoroute.site_agent.data"} <= _imports(sample)
