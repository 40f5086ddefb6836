"""The layout rules of the repository, read from the source with ``ast``.

Imports point one way: scripts -> libs.cli -> stages (caffe, training,
inference) -> models / datasets -> utils. A package may import itself and any
package of a lower layer, never one of its own layer or above. No library
module imports a script, and only ``libs.cli`` imports click. No file edits
``sys.path``; scripts and modules stay short, and no function takes more than a
handful of parameters.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LAYERS = {
    "libs.utils": 0,
    "libs.models": 1,
    "libs.datasets": 1,
    "libs.caffe": 2,
    "libs.training": 2,
    "libs.inference": 2,
    "libs.cli": 3,
}
SCRIPTS = {p.stem for p in REPO.glob("*.py")}
CLICK_ALLOWED = "libs.cli"
MAX_SCRIPT_LINES = 250
MAX_TRAIN_LINES = 200
MAX_PARAMETERS = 6
MAX_MODULE_LINES = 300


def module_name(path):
    """``libs/models/msc.py`` -> ``libs.models.msc``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(name, source, is_package=False):
    """Absolute names of every module that ``source`` (the module ``name``) imports."""
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.append(target)
            # `from libs import models` imports the package libs.models
            found.extend(f"{target}.{alias.name}" for alias in node.names
                         if f"{target}.{alias.name}" in LAYERS)
    return found


def layer_of(module):
    for package, rank in LAYERS.items():
        if module == package or module.startswith(package + "."):
            return package, rank
    return None, None


def import_problems(name, source, is_package=False):
    """Every import of module ``name`` that breaks the layout rules, as readable lines."""
    own_package, own_rank = layer_of(name)
    problems = []
    for target in imported_modules(name, source, is_package):
        top = target.split(".")[0]
        if name.startswith("libs") and top in SCRIPTS:
            problems.append(f"{name} imports the script {top}")
        if top == "click" and own_package != CLICK_ALLOWED and name.startswith("libs"):
            problems.append(f"{name} imports click (only {CLICK_ALLOWED} may)")
        if own_package is None:
            continue
        package, rank = layer_of(target)
        if package is None or package == own_package:
            if target == "libs":
                problems.append(f"{name} imports the libs package as a whole")
            continue
        if rank >= own_rank:
            problems.append(f"{name} imports {target}: {own_package} (layer {own_rank}) may "
                            f"only import lower layers, and {package} is layer {rank}")
    return problems


def library_files():
    return sorted((REPO / "libs").rglob("*.py"))


def python_files():
    skip = {".git", "data", "runs", "__pycache__"}
    return sorted(p for p in REPO.rglob("*.py") if not skip & set(p.relative_to(REPO).parts))


def test_every_library_package_has_a_layer():
    packages = {module_name(p) for p in (REPO / "libs").glob("*/__init__.py")}
    assert packages == set(LAYERS)


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_library_imports_point_one_way(path):
    name = module_name(path)
    assert import_problems(name, path.read_text(), path.name == "__init__.py") == []


@pytest.mark.parametrize("source, expected", [
    ("from libs.inference import evaluate", "libs.training.loop imports libs.inference"),
    ("from ..inference.crf import DenseCRF", "libs.training.loop imports libs.inference.crf"),
    ("import libs.cli", "libs.training.loop imports libs.cli"),
    ("import train", "libs.training.loop imports the script train"),
    ("import click", "libs.training.loop imports click"),
])
def test_the_checker_catches_a_forbidden_import(source, expected):
    problems = import_problems("libs.training.loop", source)
    assert problems and problems[0].startswith(expected)


@pytest.mark.parametrize("name, source", [
    ("libs.utils.config", "from libs.models import build_model"),
    ("libs.models.msc", "from ..datasets import transforms"),
    ("libs.datasets.transforms", "from libs import models"),
])
def test_lower_layers_may_not_import_upwards_or_sideways(name, source):
    assert import_problems(name, source)


def test_allowed_imports_pass_the_checker():
    source = ("from ..models import build_model\nfrom ..datasets import build_dataset\n"
              "from ..utils.atomic import save_torch\nfrom .loss import msc_loss_sum\nimport torch\n")
    assert import_problems("libs.training.loop", source) == []


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_file_edits_sys_path(path):
    tree = ast.parse(path.read_text())
    edits = [node.lineno for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and node.attr == "path"
             and isinstance(node.value, ast.Name) and node.value.id == "sys"]
    assert edits == [], f"{path}: sys.path used on lines {edits}"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_scripts_are_short(name):
    n_lines = len((REPO / f"{name}.py").read_text().splitlines())
    limit = MAX_TRAIN_LINES if name == "train" else MAX_SCRIPT_LINES
    assert n_lines <= limit, f"{name}.py has {n_lines} lines (limit {limit})"


def parameters(node):
    """The parameters a caller can pass: ``self``/``cls`` and ``*args``/``**kwargs`` aside."""
    args = node.args
    named = args.posonlyargs + args.args + args.kwonlyargs
    return [a.arg for a in named if a.arg not in ("self", "cls")]


def is_click_command(node):
    """A click command takes one parameter per option; its signature is its ``--help``."""
    return any("command" in ast.unparse(d) for d in node.decorator_list)


def crowded_functions(path):
    tree = ast.parse(path.read_text())
    return [f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({len(parameters(node))} parameters)"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and len(parameters(node)) > MAX_PARAMETERS and not is_click_command(node)]


def product_files():
    return library_files() + [REPO / f"{name}.py" for name in sorted(SCRIPTS)]


def test_no_function_takes_too_many_parameters():
    """A function that needs more than a handful of inputs is two ideas or wants a bundle."""
    assert [line for path in product_files() for line in crowded_functions(path)] == []


def test_no_module_is_too_long():
    lengths = {path: len(path.read_text().splitlines()) for path in product_files()}
    assert [f"{path.relative_to(REPO)} ({n} lines)" for path, n in lengths.items()
            if n > MAX_MODULE_LINES] == []


def test_the_parameter_rule_counts_what_a_caller_passes():
    tree = ast.parse("def f(self, a, b=1, *args, c, **kw): pass")
    assert parameters(tree.body[0]) == ["a", "b", "c"]


def test_errors_are_few_kinds_in_one_module():
    """Every exception class the library defines: the kinds of libs/utils/errors.py, and the stop
    signal of training (not an error)."""
    import importlib
    import inspect

    defined = set()
    for path in library_files():
        module = importlib.import_module(module_name(path))
        defined |= {f"{obj.__module__}.{name}" for name, obj in vars(module).items()
                    if inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__.startswith("libs")}
    assert len(defined) <= 8, sorted(defined)
    assert {name for name in defined if not name.startswith("libs.utils.errors.")} == {
        "libs.training.interrupt.TrainingInterrupted"}
