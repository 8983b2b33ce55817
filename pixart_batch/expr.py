"""The ``--where`` expressions of ``pixart-batch export``: a small, safe language over a row's columns.

::

    clip_score >= 28 and label in ['cat', 'dog']
    not truncated and (bucket_width > bucket_height or seed == 7)

A comparison (``== != < <= > >=``) of a column with a literal (a number, ``'text'`` / ``"text"``,
``true`` / ``false``), ``COLUMN in [...]`` / ``COLUMN not in [...]``, joined with ``and``, ``or``,
``not`` and parentheses. Nothing else: no calls, no attributes, no subscripts, no arithmetic, names
only as columns. The text is parsed by Python's own parser (``ast.parse(mode="eval")``, which runs
nothing) and every node is checked against a whitelist; it is never evaluated as Python.

Each column has a kind (number, string, bool, or a ``datasets`` ``ClassLabel``, which compares by class
name: ``label == 'cat'``); a literal of another kind is refused, naming the column. A row whose value
is missing (null) satisfies no comparison (``not`` of one is then true).
"""

from __future__ import annotations

import ast
import difflib
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ExpressionError, first_line

MAX_LENGTH = 10_000
"""Longer expressions are refused (Python's parser nests deeply on them)."""

NUMBER, STRING, BOOL, LABEL = "number", "string", "bool", "class label"

Row = dict[str, Any]
Predicate = Callable[[Row], bool]


@dataclass(frozen=True)
class Column:
    """A column an expression may name: its kind, and a class label's names (its ids are their positions)."""

    name: str
    kind: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Where:
    """A parsed expression: ``matches(row)`` and the columns it reads."""

    text: str
    matches: Predicate
    columns: frozenset[str] = field(default_factory=frozenset)


_ORDER = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_EQUALITY = {ast.Eq: operator.eq, ast.NotEq: operator.ne}
_SYMBOLS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in"}
_SYMBOLS[ast.NotIn] = "not in"
_FLIPPED = {ast.Lt: ast.Gt, ast.LtE: ast.GtE, ast.Gt: ast.Lt, ast.GtE: ast.LtE, ast.Eq: ast.Eq, ast.NotEq: ast.NotEq}
_BOOLEANS = {"true": True, "false": False, "True": True, "False": False}
_NEVER = (ast.Call, ast.Attribute, ast.Subscript, ast.BinOp, ast.Lambda, ast.IfExp, ast.NamedExpr, ast.Starred)
_HELP = "use comparisons of a column with a literal, 'in [...]', 'and', 'or', 'not' and parentheses"


def parse_where(text: str, columns: dict[str, Column]) -> Where:
    """``text`` checked against ``columns`` (one-line :class:`ExpressionError` naming the column or the
    position of the offending token)."""
    text = text.strip()
    if not text:
        raise ExpressionError("--where: empty expression")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"--where: expression of {len(text)} characters (at most {MAX_LENGTH})")
    if "\n" in text or "\r" in text:
        raise ExpressionError("--where: the expression must be one line")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        position = exc.offset or 0
        near = text[position - 1 : position + 9] if position else ""
        raise ExpressionError(
            f"--where: syntax error at position {position}: {exc.msg}" + (f" (near {near!r})" if near else "") + f"; {_HELP}"
        ) from None
    except (RecursionError, MemoryError):
        raise ExpressionError("--where: expression nested too deeply") from None
    except ValueError as exc:  # a NUL character
        raise ExpressionError(f"--where: not an expression ({first_line(exc)})") from None
    used: set[str] = set()
    try:
        matches = _Compiler(text, columns, used).node(tree.body)
    except RecursionError:
        raise ExpressionError("--where: expression nested too deeply") from None
    return Where(text, matches, frozenset(used))


class _Compiler:
    def __init__(self, text: str, columns: dict[str, Column], used: set[str]) -> None:
        self.text, self.columns, self.used = text, columns, used

    def refuse(self, node: ast.AST, what: str, hint: str = "") -> ExpressionError:
        position = getattr(node, "col_offset", 0) + 1
        source = ast.get_source_segment(self.text, node) or ""
        shown = source if len(source) <= 40 else source[:39] + "…"
        return ExpressionError(f"--where: {what} at position {position} ({shown!r})" + (f"; {hint}" if hint else ""))

    def node(self, node: ast.AST) -> Predicate:
        if isinstance(node, ast.BoolOp):
            parts = [self.node(value) for value in node.values]
            if isinstance(node.op, ast.And):
                return lambda row: all(part(row) for part in parts)
            return lambda row: any(part(row) for part in parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self.node(node.operand)
            return lambda row: not inner(row)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Name) and node.id not in _BOOLEANS:
            column = self.column(node)
            if column.kind != BOOL:
                raise self.refuse(node, f"column '{column.name}' is a {column.kind}, not a bool: compare it with a value")
            name = column.name
            return lambda row: row.get(name) is True
        raise self.refuse(node, f"unsupported {_describe(node)}", _HELP)

    def column(self, node: ast.Name) -> Column:
        column = self.columns.get(node.id)
        if column is None:
            raise ExpressionError(f"--where: unknown column '{node.id}' ({_known(node.id, self.columns)})")
        self.used.add(column.name)
        return column

    def literal(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float, str)):
            return node.value
        if isinstance(node, ast.Name) and node.id in _BOOLEANS:
            return _BOOLEANS[node.id]
        if (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) in (int, float)
        ):
            number: float = node.operand.value  # type: ignore[assignment]  # an int or a float: checked above
            return -number if isinstance(node.op, ast.USub) else number
        raise self.refuse(node, f"expected a literal (a number, 'text', true or false), found {_describe(node)}")

    def compare(self, node: ast.Compare) -> Predicate:
        if len(node.ops) != 1:
            raise self.refuse(node, "chained comparison; join comparisons with 'and'")
        op, left, right = type(node.ops[0]), node.left, node.comparators[0]
        for side in (left, right):
            if isinstance(side, _NEVER):
                raise self.refuse(side, f"unsupported {_describe(side)}", _HELP)
        left_is_column = isinstance(left, ast.Name) and left.id not in _BOOLEANS
        right_is_column = isinstance(right, ast.Name) and right.id not in _BOOLEANS
        if left_is_column and right_is_column:
            raise self.refuse(node, "comparison of two columns; compare a column with a literal")
        if op in (ast.In, ast.NotIn):
            if not left_is_column:
                raise self.refuse(node, f"'{_SYMBOLS[op]}' needs a column on its left")
            if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
                raise self.refuse(right, f"'{_SYMBOLS[op]}' needs a list of literals, like ['a', 'b']")
            assert isinstance(left, ast.Name)
            column = self.column(left)
            values = {self.value(column, element, op) for element in right.elts}
            name, negate = column.name, op is ast.NotIn
            return lambda row: (value := row.get(name)) is not None and ((value in values) != negate)
        if not left_is_column and not right_is_column:
            raise self.refuse(node, "comparison without a column; compare a column with a literal")
        if right_is_column:  # 28 <= clip_score: the column on the left
            left, right, op = right, left, _FLIPPED[op]
        if op not in _ORDER and op not in _EQUALITY:
            raise self.refuse(node, f"unsupported comparison {_describe(node)}")
        assert isinstance(left, ast.Name)
        column = self.column(left)
        value = self.value(column, right, op)
        test = _ORDER.get(op) or _EQUALITY[op]
        name = column.name
        return lambda row: (found := row.get(name)) is not None and bool(test(found, value))

    def value(self, column: Column, node: ast.AST, op: type) -> Any:
        """The literal ``node`` as a value of ``column`` (a class label's name → its id)."""
        value = self.literal(node)
        ordered = op in _ORDER
        if column.kind == NUMBER:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.refuse(node, f"column '{column.name}' is a number; cannot compare it with {_kind_of(value)}")
            return value
        if column.kind == STRING:
            if not isinstance(value, str):
                raise self.refuse(node, f"column '{column.name}' is a string; cannot compare it with {_kind_of(value)}")
            return value
        if column.kind == BOOL:
            if not isinstance(value, bool):
                raise self.refuse(node, f"column '{column.name}' is a bool; compare it with true or false")
            if ordered:
                raise self.refuse(node, f"column '{column.name}' is a bool; use == or !=")
            return value
        # A class label: by name, never by order.
        if ordered:
            raise self.refuse(node, f"column '{column.name}' is a class label; use ==, !=, in or not in with class names")
        if not isinstance(value, str):
            raise self.refuse(
                node, f"column '{column.name}' is a class label compared by class name ('{column.names[0]}'), not a number"
            )
        if value not in column.names:
            shown = ", ".join(column.names[:8]) + (", ..." if len(column.names) > 8 else "")
            raise self.refuse(node, f"'{value}' is not a class of column '{column.name}' (classes: {shown})")
        return column.names.index(value)


def _describe(node: ast.AST) -> str:
    kinds = {
        ast.Call: "call",
        ast.Attribute: "attribute",
        ast.Subscript: "subscript",
        ast.BinOp: "arithmetic",
        ast.Lambda: "lambda",
        ast.IfExp: "conditional",
    }
    for kind, text in kinds.items():
        if isinstance(node, kind):
            return text
    if isinstance(node, ast.Compare):
        return "comparison " + " ".join(_SYMBOLS.get(type(op), type(op).__name__) for op in node.ops)
    if isinstance(node, ast.Constant):
        return f"the literal {node.value!r}"
    return type(node).__name__


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return f"the bool {'true' if value else 'false'}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"the number {value}"


def _known(name: str, columns: dict[str, Column]) -> str:
    close = difflib.get_close_matches(name, list(columns), n=3)
    shown = ", ".join(sorted(columns)[:12]) + (", ..." if len(columns) > 12 else "")
    return (f"did you mean {' or '.join(close)}? " if close else "") + f"columns: {shown}"


def columns_of(fields: dict[str, Any], label_names: dict[str, list[str]] | None = None) -> dict[str, Column]:
    """The filterable columns of a row schema: ``fields`` maps a column to its ``datasets`` feature (or
    an Arrow type); ``label_names`` gives the class names of the columns that are class labels.
    Lists, structs and binary columns (the image) cannot be filtered on and are left out."""
    import pyarrow as pa

    found: dict[str, Column] = {}
    for name, feature in fields.items():
        names = (label_names or {}).get(name) or getattr(feature, "names", None)
        if names:
            found[name] = Column(name, LABEL, tuple(str(n) for n in names))
            continue
        kind = feature if isinstance(feature, pa.DataType) else _arrow_type(feature)
        if kind is None:
            continue
        if pa.types.is_boolean(kind):
            found[name] = Column(name, BOOL)
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
            found[name] = Column(name, NUMBER)
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            found[name] = Column(name, STRING)
    return found


def _arrow_type(feature: Any) -> Any:
    dtype = getattr(feature, "pa_type", None)
    if dtype is not None and type(feature).__name__ == "Value":
        return dtype
    return None
