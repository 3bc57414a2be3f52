"""The code a logged pyfunc carries: the few ``rps`` modules that load and run a bundle.

``mlflow models serve -m models:/<name>/<version>`` builds the model's environment from its
``requirements.txt`` alone, without the ``rps`` package. So the pyfunc ships, as MLflow
``code_paths``, the modules that importing :mod:`rps.models.pyfunc` executes: its ``rps``
imports at module level (not those inside functions or under ``TYPE_CHECKING``), followed
transitively, with their parent packages. Today that is the bundle, the forecasters (and their
one-row LightGBM path), the feature spec and :mod:`rps.files`; none of them imports pandas,
scikit-learn or the pipeline's modules.

:func:`stage_package` copies those files into a folder laid out as the package, which
:func:`rps.models.registry.log_model` passes to MLflow; MLflow puts the folder's parent on
``sys.path`` when it loads the model.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import rps

__all__ = ["PACKAGE", "PYFUNC_MODULE", "import_closure", "stage_package"]

PACKAGE = "rps"
#: what MLflow's "models from code" entry point imports (``pyfunc_entry.py``)
PYFUNC_MODULE = "rps.models.pyfunc"

_PACKAGE_ROOT = Path(rps.__file__).resolve().parent


def _source_file(module: str) -> Path | None:
    """The file of an ``rps`` module or package (None: no such module, e.g. a class name)."""
    parts = module.split(".")[1:]
    base = _PACKAGE_ROOT.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_at_load(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """The ``rps`` names a module's import statements name when the module is executed."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue  # runs only when called
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        pending.extend(ast.iter_child_nodes(node))
    return {name for name in found if name == PACKAGE or name.startswith(f"{PACKAGE}.")}


def import_closure(module: str = PYFUNC_MODULE) -> list[str]:
    """The ``rps`` modules that importing ``module`` executes (sorted, packages included).

    Raises:
        ModuleNotFoundError: ``module`` is not a module of the installed ``rps`` package.
    """
    if _source_file(module) is None:
        raise ModuleNotFoundError(f"{module} is not a module of the {PACKAGE} package")
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        path = _source_file(name)
        if path is None:  # an attribute imported from a module, not a module
            continue
        seen.add(name)
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        pending.extend(parents)
        pending.extend(_imported_at_load(tree, name, path.name == "__init__.py"))
    return sorted(seen)


def stage_package(directory: Path, module: str = PYFUNC_MODULE) -> Path:
    """Copy the files of :func:`import_closure` into ``directory/rps`` (package layout kept).

    Returns:
        The staged package folder (what MLflow's ``code_paths`` takes).
    """
    target = directory / PACKAGE
    for name in import_closure(module):
        source = _source_file(name)
        assert source is not None  # import_closure keeps only names with a file
        destination = target / source.relative_to(_PACKAGE_ROOT)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    return target
