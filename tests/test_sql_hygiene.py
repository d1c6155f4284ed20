"""Values reach PostgreSQL only as parameters: no statement is built by string formatting."""

from __future__ import annotations

import ast
import string
from pathlib import Path

from kongtask._schema.v0_1 import named_statements, statement_names

PACKAGE = Path(__file__).resolve().parent.parent / "kongtask"
EXECUTORS = {"execute", "executemany"}


def _built_by_formatting(node: ast.expr) -> bool:
    if isinstance(node, ast.JoinedStr):  # f"..."
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):  # "..." % x, "..." + x
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        # str.format, but not psycopg's sql.SQL(...).format, which quotes identifiers.
        inner = node.func.value
        return not (isinstance(inner, ast.Call) and getattr(inner.func, "attr", getattr(inner.func, "id", "")) == "SQL")
    return False


def test_no_statement_is_built_by_string_formatting() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in EXECUTORS
                and node.args
                and _built_by_formatting(node.args[0])
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_the_check_catches_a_formatted_statement() -> None:
    sample = ast.parse('conn.execute(f"select * from jobs where id = {job_id}")')
    call = sample.body[0].value  # type: ignore[attr-defined]
    assert _built_by_formatting(call.args[0])


def test_the_named_statements_fill_in_identifiers_only() -> None:
    # v0_1.sql's blocks take values as %s parameters; {...} fields are quoted identifiers.
    for name, template in named_statements().items():
        fields = {field for _, field, _, _ in string.Formatter().parse(template) if field}
        assert fields <= {"schema", "channel"}, f"{name} fills in {fields}"


def test_every_named_statement_is_declared_once_and_every_declared_one_is_named() -> None:
    declared = statement_names()
    assert declared == set(named_statements()) - {"install_extensions"}
