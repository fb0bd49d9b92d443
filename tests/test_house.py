"""The shape of the house: layers import only downwards, no import cycles, no private names across modules, short
functions, light start-up. Static (ast) checks over every module, function-local imports included.

Layers, lowest first (README, "Layout"):
core (scenes, sim, obs, metrics, planners, plans, geometry, cache, utils, rewards) -> envs -> policies ->
evaluation / leaderboard / agents -> reward_models -> baselines -> app (cli, pipeline, presets).
``benchmarks`` sits above everything and nothing imports it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("irlvla_gym", "reward_models", "baselines", "benchmarks")
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("irlvla_gym.scenes", "irlvla_gym.sim", "irlvla_gym.obs", "irlvla_gym.metrics", "irlvla_gym.planners",
              "irlvla_gym.plans", "irlvla_gym.geometry", "irlvla_gym.cache", "irlvla_gym.utils",
              "irlvla_gym.rewards", "irlvla_gym.configs")),
    ("envs", ("irlvla_gym.envs",)),
    ("policies", ("irlvla_gym.policies",)),
    ("evaluation", ("irlvla_gym.evaluation", "irlvla_gym.leaderboard", "irlvla_gym.agents")),
    ("reward_models", ("reward_models",)),
    ("baselines", ("baselines",)),
    ("app", ("irlvla_gym.cli", "irlvla_gym.pipeline", "irlvla_gym.presets", "irlvla_gym.stages")),
    ("benchmarks", ("benchmarks",)),
)
FUNCTION_LINE_LIMIT = 100
COMPILED_DECORATORS = ("njit", "jit")  # numba kernels: one long function on purpose (documented in their modules)


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def _imports(name: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) of every import in module ``name``, local ones included."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] in PACKAGES]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] in PACKAGES:
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    found.append((sub, "", node.lineno) if sub in MODULES else (target, a.name, node.lineno))
    return found


def _layer(module: str) -> int | None:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            best = i
    return best


def _sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_every_module_has_a_layer():
    unlayered = [m for m in MODULES if m not in PACKAGES and _layer(m) is None and m != "irlvla_gym"]
    assert not unlayered, f"modules outside every layer (add them to LAYERS and the README): {unlayered}"


def test_no_upward_imports():
    upward = []
    for name in MODULES:
        own = _layer(name)
        if own is None:  # the package roots (irlvla_gym/__init__ registers the envs: gym entry-point strings)
            continue
        for target, _, line in _imports(name):
            other = _layer(target)
            if other is not None and other > own:
                upward.append(f"{MODULES[name].relative_to(ROOT)}:{line} ({LAYERS[own][0]}) imports {target} "
                              f"({LAYERS[other][0]})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_nothing_imports_benchmarks():
    offenders = [f"{name}:{line}" for name in MODULES if not name.startswith("benchmarks")
                 for target, _, line in _imports(name) if target.split(".")[0] == "benchmarks"]
    assert not offenders


def test_no_import_cycles_between_files_or_packages():
    files: dict[str, set[str]] = defaultdict(set)
    packages: dict[str, set[str]] = defaultdict(set)
    for name in MODULES:
        for target, _, _ in _imports(name):
            if target in MODULES and target != name:
                files[name].add(target)
            # packages: the sub-package a module belongs to (irlvla_gym.envs, reward_models, ...)
            source_pkg, target_pkg = _package_of(name), _package_of(target)
            if source_pkg != target_pkg:
                packages[source_pkg].add(target_pkg)
    assert not _sccs(files), f"file import cycles: {_sccs(files)}"
    assert not _sccs(packages), f"package import cycles: {_sccs(packages)}"


def _package_of(module: str) -> str:
    """``irlvla_gym.<sub-package or top-level module>``, or the top-level package (reward_models, baselines, ...)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "irlvla_gym" else parts[0]


def test_no_private_names_imported_across_modules():
    private = [f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}.{imported}"
               for name in MODULES for target, imported, line in _imports(name)
               if imported.startswith("_") and not imported.startswith("__")]
    assert not private, "private names imported from other modules (make them public):\n" + "\n".join(private)


def _compiled(node: ast.AST) -> bool:
    for d in getattr(node, "decorator_list", ()):
        target = d.func if isinstance(d, ast.Call) else d
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name in COMPILED_DECORATORS:
            return True
    return False


def test_no_function_over_the_limit():
    long = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _compiled(node):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINE_LIMIT:
                    long.append(f"{MODULES[name].relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"functions over {FUNCTION_LINE_LIMIT} lines:\n" + "\n".join(long)


@pytest.mark.parametrize("code", [
    "import irlvla_gym",
    "from irlvla_gym.cli import build_parser; build_parser()",
    "import reward_models, baselines",
])
def test_light_imports(code):
    """``import irlvla_gym`` and building the whole ``irlvla`` parser (what ``irlvla --help`` does) import no torch,
    Stable-Baselines3, transformers or matplotlib."""
    heavy = ("torch", "stable_baselines3", "transformers", "matplotlib", "ray", "scipy.signal", "shapely", "numba")
    probe = f"import sys; {code}; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"{code!r} imported {loaded.stdout.strip()}"


def test_benchmarks_is_not_an_installed_package():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"benchmarks*"' not in pyproject, "benchmarks/ runs from the repo (python -m benchmarks.NAME)"


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_shipped_checkpoints_record_no_machine_paths():
    """A shipped config.json names how it was made (a command), never a path of the machine that made it."""
    import json

    offenders = []
    for path in sorted(ROOT.glob("**/checkpoints/**/*.json")):
        for text in _strings(json.loads(path.read_text())):
            if text.startswith(("/", "~")) or text[1:3] == ":\\" or "/tmp/" in text or "/home/" in text:
                offenders.append(f"{path.relative_to(ROOT)}: {text!r}")
    assert not offenders, "machine paths in shipped checkpoints:\n" + "\n".join(offenders)
