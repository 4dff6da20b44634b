"""One vocabulary: the exit codes, the database tools' errors and a migrate's status, each named in one place."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

CODE = ("songsgen", "queueing", "songs", "accounts")
EXCEPTIONS = "songsgen.db.exceptions"


def _modules(*folders: str) -> Iterator[tuple[Path, ast.Module]]:
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            yield path.relative_to(REPO), ast.parse(path.read_text(), str(path))


def _error_classes() -> set[str]:
    tree = ast.parse((REPO / "songsgen/db/exceptions.py").read_text())
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef)}


def test_each_error_is_imported_from_songsgen_db_exceptions_only():
    errors, found = _error_classes(), []
    for path, tree in _modules(*CODE, "tests", "bench"):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module != EXCEPTIONS:
                found += [f"{path}:{node.lineno} {a.name} from {node.module}" for a in node.names if a.name in errors]
            elif isinstance(node, ast.Attribute) and node.attr in errors and not (
                    isinstance(node.value, ast.Name) and node.value.id == "exceptions"):
                found.append(f"{path}:{node.lineno} {ast.unparse(node)}")
    assert found == []
    assert not (REPO / "songsgen/db/backup/errors.py").exists()


def test_every_error_is_raised_or_a_base_of_others():
    """No error class that nothing raises (UpgradeUnproven once was): each is made somewhere, or is a base."""
    errors = _error_classes()
    raised = {node.func.id for _, tree in _modules(*CODE) for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    tree = ast.parse((REPO / "songsgen/db/exceptions.py").read_text())
    bases = {base.id for node in tree.body if isinstance(node, ast.ClassDef) for base in node.bases
             if isinstance(base, ast.Name)}
    assert sorted(errors - raised - bases) == []


def test_exit_codes_come_from_the_command_boundary():
    from songsgen.boundary import ExitCode

    assert {code.name: int(code) for code in ExitCode} == {"OK": 0, "FAILED": 1, "REFUSED": 2, "BROKEN": 3}
    found = []
    for path, tree in _modules(*CODE):
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id.startswith("EXIT_") and isinstance(node.ctx, ast.Store):
                found.append(f"{path}:{node.lineno} {node.id}")
            elif isinstance(node, ast.keyword) and node.arg == "returncode" and isinstance(node.value, ast.Constant):
                found.append(f"{path}:{node.lineno} returncode={node.value.value}")
    assert found == []


def test_a_migrate_status_is_never_spelt_as_a_string():
    """Every status a run can end with is a RunStatus member, in the run, the marker and the command."""
    found = []
    for path, tree in _modules("songsgen/db", "songsgen/management", "songsgen/monitoring"):
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                pairs = [(node.targets[0], node.value)]
                if isinstance(node.targets[0], ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs = list(zip(node.targets[0].elts, node.value.elts, strict=False))
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                pairs = [(node.target, node.value)]
            elif isinstance(node, ast.Compare):
                pairs = [(node.left, right) for right in node.comparators]
            else:
                continue
            for target, value in pairs:
                name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                words = value.elts if isinstance(value, ast.Tuple) else [value]
                if name == "status" and any(isinstance(w, ast.Constant) and isinstance(w.value, str) for w in words):
                    found.append(f"{path}:{node.lineno} {ast.unparse(node)[:80]}")
    assert found == []
