"""The folder tree's arrows: the shared base imports no product, and a product no other (but migrate -> backup)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCTS = ("songsgen.db.migrate", "songsgen.db.backup", "songsgen.db.move")
# The one arrow between products (docs/architecture.md): the migrate's snapshot and rehearsal use backup's package.
ALLOWED = {("songsgen.db.migrate", "songsgen.db.backup")}


def product(module: str) -> str | None:
    return next((p for p in PRODUCTS if module == p or module.startswith(p + ".")), None)


def imports(path: Path) -> list[tuple[str, str]]:
    """(module named, module the names come from) of every import in the file, those inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(f"{node.module}.{alias.name}", node.module) for alias in node.names]
    return found


def wrong_arrows() -> list[str]:
    wrong = []
    for path in sorted((ROOT / "songsgen" / "db").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        mine = product(module)
        for named, source in imports(path):
            theirs = product(named)
            if theirs is None or theirs == mine:
                continue
            if mine is None:
                wrong.append(f"{module} (shared base) imports {named}")
            elif (mine, theirs) not in ALLOWED:
                wrong.append(f"{module} imports {named} of another product")
            elif theirs not in (source, named):
                wrong.append(f"{module} imports {named} past {theirs}'s package, its public API")
    return wrong


def test_the_shared_base_imports_no_product_and_products_import_no_other():
    assert wrong_arrows() == []


def test_the_check_reads_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from songsgen.db.move import transfer\n")
    assert imports(module) == [("songsgen.db.move.transfer", "songsgen.db.move")]
