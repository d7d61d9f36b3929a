"""What each image's service imports, against what that image's pyproject extra installs (no podman needed).

An image installs ``.[<extra>]`` (docker/<image>.Dockerfile). Its process starts from the modules the
Dockerfile's CMD/ENTRYPOINT names (the gunicorn app and config, or the ``dicomlab`` console script). From
there :func:`imported_modules` follows our own modules' imports with :mod:`ast` (module level and inside
functions: a lazy import that fails still fails in the pod) and collects every third-party top-level module.
:func:`installed_distributions` resolves the extra's requirements, with their own extras and markers, through
the metadata of the development install (which has every extra). A third-party module whose distribution is
not in that set would raise ``ModuleNotFoundError`` in the container.

Not followed, on purpose: imports under ``if TYPE_CHECKING:`` (never run) and imports guarded by
``except ImportError`` / ``ModuleNotFoundError`` (the code has a fallback).
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = (REPO / "services", REPO / "training")
FIRST_PARTY = ("dicomlab_core", "dicomlab_cli", "dicomlab_proxy", "dicomlab_manifest", "dicomlab_labeling",
               "dicomlab_training")


SUBCOMMAND_MODULES = {"train": "dicomlab_training.cli"}
"""The module that registers a ``dicomlab`` sub-command an image's CMD runs (the chart's and ``dicomlab train
submit``'s Jobs run ``dicomlab train ...`` in the training image)."""


@dataclass(frozen=True)
class ImageEntry:
    """One image: the extra it installs and the modules its container's process starts from."""

    image: str
    extra: str
    entry_modules: tuple[str, ...]
    eager_modules: tuple[str, ...] = ()
    """Started from too, but only for what runs at import (a CLI that imports every sub-command's module,
    of which this image runs one: the others' lazy imports never run here)."""


@dataclass
class ImportGraph:
    """Third-party top-level modules reached from the entry modules, each with one importer that shows why."""

    third_party: dict[str, str] = field(default_factory=dict)
    visited: set[str] = field(default_factory=set)


def module_path(module: str) -> Path | None:
    """The source file of a first-party module (package ``__init__`` or plain module), None if absent."""
    parts = module.split(".")
    for root in SOURCE_ROOTS:
        base = root.joinpath(*parts)
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return candidate
    return None


def _is_first_party(name: str) -> bool:
    return name.split(".")[0] in FIRST_PARTY


def _guarded(handlers: list[ast.ExceptHandler]) -> bool:
    """A try block whose handler catches ImportError (or its subclass, or everything) has a fallback."""
    for handler in handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        for kind in kinds:
            if kind is None or (isinstance(kind, ast.Name) and kind.id in (
                    "ImportError", "ModuleNotFoundError", "Exception", "BaseException")):
                return True
    return False


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, source: str, *, lazy: bool = True) -> list[str]:
    """Absolute module names one module imports (``from x import y`` gives ``x`` and ``x.y``; relative
    imports resolved against ``module``), skipping TYPE_CHECKING blocks and ImportError-guarded tries;
    ``lazy=False``: only what runs at import, not the imports inside functions."""
    is_package = (module_path(module) or Path()).name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if not lazy and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.If) and _type_checking(node.test):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Try) and _guarded(node.handlers):
            for part in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(part)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def imported_modules(entry_modules: Iterable[str], eager_modules: Iterable[str] = ()) -> ImportGraph:
    """Follow first-party imports from the entry modules (all of them) and the eager modules (only what
    runs at import); collect the third-party top-level names."""
    graph = ImportGraph()
    stdlib = set(sys.stdlib_module_names)
    todo = [(name, True) for name in entry_modules] + [(name, False) for name in eager_modules]
    seen: set[tuple[str, bool]] = set()
    while todo:
        module, lazy = todo.pop()
        if (module, lazy) in seen or (module, True) in seen:
            continue
        seen.add((module, lazy))
        graph.visited.add(module)
        path = module_path(module)
        if path is None:
            continue  # `from pkg import name` where name is not a module
        # Importing a.b.c runs a/__init__ and a/b/__init__ first.
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        for name in [*parents, *imports_of(module, path.read_text(encoding="utf-8"), lazy=lazy)]:
            top = name.split(".")[0]
            if _is_first_party(name):
                todo.append((name, lazy))
            elif top and top not in stdlib and top != "__future__":
                graph.third_party.setdefault(top, module)
    return graph


@cache
def _module_distributions() -> dict[str, list[str]]:
    return {name: [canonicalize_name(d) for d in dists] for name, dists in metadata.packages_distributions().items()}


def distributions_of(module: str) -> set[str]:
    """The installed distributions that provide a top-level module (canonical names)."""
    dists = _module_distributions().get(module)
    if not dists:
        raise LookupError(f"no installed distribution provides the module {module!r} (is the dev venv complete?)")
    return set(dists)


def installed_distributions(project: str, extras: Iterable[str]) -> set[str]:
    """Every distribution ``pip install '<project>[extras]'`` installs, resolved through installed metadata."""
    result: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(canonicalize_name(project), frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        result.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is not None:
                base = {key: str(value) for key, value in default_environment().items()}
                environments = [{**base, "extra": extra} for extra in (wanted or {""})]
                if not any(requirement.marker.evaluate(env) for env in environments):
                    continue
            todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return result


def dockerfile_entry(image: str) -> ImageEntry:
    """The extra and entry modules an image's Dockerfile names (pip install '.[x]', CMD/ENTRYPOINT)."""
    text = (REPO / "docker" / f"{image}.Dockerfile").read_text(encoding="utf-8")
    extras = re.findall(r"pip install [^\n]*'\.(?:\[(\w*)\])?'", text)
    if len(extras) != 1:
        raise ValueError(f"docker/{image}.Dockerfile: expected one pip install '.[extra]', found {extras}")
    entries: list[str] = []
    eager: list[str] = []
    entries += re.findall(r"python:(dicomlab_\w+(?:\.\w+)*)", text)     # gunicorn -c python:<module>
    entries += re.findall(r'"(dicomlab_\w+(?:\.\w+)*):\w+\(\)"', text)  # the WSGI app factory
    command = re.search(r'ENTRYPOINT \["dicomlab"\]\s*\nCMD \["(\w+)"', text)
    if command:  # the console script: all of it loads, then the one sub-command the image exists for runs
        eager.append(console_script_module("dicomlab"))
        entries.append(SUBCOMMAND_MODULES[command.group(1)])
    if not entries:
        raise ValueError(f"docker/{image}.Dockerfile: no entry module found in CMD/ENTRYPOINT")
    return ImageEntry(image, extras[0], tuple(entries), tuple(eager))


def console_script_module(name: str) -> str:
    (point,) = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == name]
    return point.module


def missing_modules(entry: ImageEntry, *, extra: str | None = None, inline: str = "") -> dict[str, str]:
    """Third-party modules the image's code imports that its extra does not install: {module: importer}.
    ``inline``: Python source the container runs besides its modules (``python -c``)."""
    installed = installed_distributions("dicomlab", [extra if extra is not None else entry.extra])
    entries = list(entry.entry_modules)
    graph = ImportGraph()
    if inline:
        for name in imports_of("__main__", inline):
            if _is_first_party(name):
                entries.append(name)
            elif name.split(".")[0] not in sys.stdlib_module_names:
                graph.third_party.setdefault(name.split(".")[0], "python -c")
    found = imported_modules(entries, entry.eager_modules)
    for module, importer in found.third_party.items():
        graph.third_party.setdefault(module, importer)
    return {module: importer for module, importer in sorted(graph.third_party.items())
            if not distributions_of(module) & installed}


def container_entry(image: str, command: list[str] | None, args: list[str] | None) -> tuple[ImageEntry, str]:
    """What a rendered container runs in one of our images: (entry, inline source). No command: the
    image's own CMD/ENTRYPOINT; ``python -m X``; ``python -c CODE``; ``dicomlab <sub-command> ...``."""
    base = dockerfile_entry(image)
    argv = [*(command or []), *(args or [])]
    if not command and (not args or base.eager_modules):
        if args and args[0] not in SUBCOMMAND_MODULES:
            raise ValueError(f"{image}: dicomlab {args[0]} is not a sub-command this image is known to run")
        return base, ""
    if argv[:2] == ["python", "-m"] and len(argv) > 2:
        return ImageEntry(image, base.extra, (argv[2],)), ""
    if argv[:2] == ["python", "-c"] and len(argv) > 2:
        return ImageEntry(image, base.extra, ()), argv[2]
    if argv[:1] == ["dicomlab"] and len(argv) > 1 and argv[1] in SUBCOMMAND_MODULES:
        return ImageEntry(image, base.extra, (SUBCOMMAND_MODULES[argv[1]],),
                          (console_script_module("dicomlab"),)), ""
    raise ValueError(f"{image}: unknown command shape {argv[:3]} (teach tests/deploy/image_deps.py what it runs)")


CREDENTIAL_SERVICES = frozenset({"sts", "sso", "sso-oidc", "signin"})
"""botocore's credential providers call these (web identity/IRSA, SSO, login): an image with boto3 needs them."""


def aws_clients(modules: Iterable[str]) -> dict[str, str]:
    """AWS services our modules create boto3 clients for, by literal name: {service: module}."""
    found: dict[str, str] = {}
    for module in sorted(modules):
        path = module_path(module)
        if path is not None:
            for service in re.findall(r"client\(\s*[\"']([a-z0-9-]+)[\"']", path.read_text(encoding="utf-8")):
                found.setdefault(service, module)
    return found


def kept_botocore_services(image: str) -> set[str] | None:
    """The AWS service models docker/<image>.Dockerfile keeps (slim_venv.py --botocore-services); None: all."""
    text = (REPO / "docker" / f"{image}.Dockerfile").read_text(encoding="utf-8")
    if "slim_venv.py" not in text:
        return None
    match = re.search(r"--botocore-services ([\w,-]+)", text)
    return set(match.group(1).split(",")) if match else set()
