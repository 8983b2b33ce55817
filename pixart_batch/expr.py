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
name: ``label == 'cat'``, names compared in Unicode NFC); a literal of another kind is refused, naming the
column. A row whose value is missing (null) satisfies no comparison (``not`` of one is then true).

Anything else is a one-line :class:`~pixart_batch.errors.ExpressionError` naming the construct and its
position: ``is``, chained comparisons, ``:=``, f-strings, bytes, ``None``, a number of more than
:data:`MAX_NUMBER_CHARS` characters or beyond a float's range, ``not`` / ``and`` / ``or`` nested more
than :data:`MAX_DEPTH` deep, a control character.
"""

from __future__ import annotations

import ast
import difflib
import math
import operator
import unicodedata
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ExpressionError, first_line, shorten

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
_SYMBOLS = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.In: "in",
}
_SYMBOLS |= {ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
_FLIPPED = {
    ast.Lt: ast.Gt,
    ast.LtE: ast.GtE,
    ast.Gt: ast.Lt,
    ast.GtE: ast.LtE,
    ast.Eq: ast.Eq,
    ast.NotEq: ast.NotEq,
}
_BOOLEANS = {"true": True, "false": False, "True": True, "False": False}
_HELP = "use comparisons of a column with a literal, 'in [...]', 'and', 'or', 'not' and parentheses"
MAX_NUMBER_CHARS = 100
"""Longer number literals are refused (no column holds a number that needs more; Python's own
conversion gives up at 4300 digits, with its own message at no position)."""
MAX_DEPTH = 100
"""``not`` / ``and`` / ``or`` nested deeper are refused (the matcher nests one call per level)."""
_CONSTRUCTS: dict[type, str] = {
    ast.Call: "call",
    ast.Attribute: "attribute",
    ast.Subscript: "subscript",
    ast.Slice: "slice",
    ast.BinOp: "arithmetic",
    ast.Lambda: "lambda",
    ast.IfExp: "conditional",
    ast.NamedExpr: "assignment expression (:=)",
    ast.Starred: "starred expression",
    ast.JoinedStr: "f-string",
    ast.FormattedValue: "f-string",
    ast.List: "list",
    ast.Tuple: "tuple",
    ast.Set: "set",
    ast.Dict: "dict",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "generator expression",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.BoolOp: "'and' / 'or'",
}


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
    _check_characters(text)
    _check_numbers(text)
    try:
        with warnings.catch_warnings():  # an invalid escape in a string: no warning printed
            warnings.simplefilter("ignore")
            tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        position = exc.offset or 0
        near = text[position - 1 : position + 9] if 0 < position <= len(text) else ""
        at = f"at position {position}" if near else f"at position {len(text) + 1} (the end of the expression)"
        shown = f" (near {near!r})" if near else ""
        message = " ".join(str(exc.msg).splitlines())
        raise ExpressionError(f"--where: syntax error {at}: {message}{shown}; {_HELP}") from None
    except (RecursionError, MemoryError):
        raise ExpressionError("--where: expression nested too deeply") from None
    except ValueError as exc:
        raise ExpressionError(f"--where: not an expression ({first_line(exc)})") from None
    used: set[str] = set()
    try:
        matches = _Compiler(text, columns, used).node(tree.body)
    except RecursionError:
        raise ExpressionError("--where: expression nested too deeply") from None
    return Where(text, matches, frozenset(used))


def _check_characters(text: str) -> None:
    """Refuse a control character (a tab aside) or an unpaired surrogate, naming its position."""
    for position, char in enumerate(text, 1):
        if char != "\t" and unicodedata.category(char) in ("Cc", "Cs"):
            what = "an unpaired surrogate" if unicodedata.category(char) == "Cs" else "a control character"
            raise ExpressionError(f"--where: {what} (U+{ord(char):04X}) at position {position}; remove it")


def _check_numbers(text: str) -> None:
    """Refuse a number literal of more than :data:`MAX_NUMBER_CHARS` characters, naming its position
    (before Python's parser converts it). Text the tokenizer cannot read is left to the parser."""
    import io
    import tokenize

    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            number, position = token.string, token.start[1] + 1
            if token.type == tokenize.NUMBER and len(number) > MAX_NUMBER_CHARS:
                raise ExpressionError(
                    f"--where: the number at position {position} has {len(number):,} characters "
                    f"({number[:12]}…); numbers are at most {MAX_NUMBER_CHARS} characters"
                )
    except (tokenize.TokenError, SyntaxError, ValueError, RecursionError, MemoryError):
        return  # the parser names what is wrong


class _Compiler:
    def __init__(self, text: str, columns: dict[str, Column], used: set[str]) -> None:
        self.text, self.columns, self.used = text, columns, used

    def refuse(self, node: ast.AST, what: str, hint: str = "") -> ExpressionError:
        offset = getattr(node, "col_offset", 0)  # in UTF-8 bytes: the position counts characters
        position = len(self.text.encode("utf-8")[:offset].decode("utf-8", "ignore")) + 1
        source = ast.get_source_segment(self.text, node) or ""
        shown = source if len(source) <= 40 else source[:39] + "…"
        return ExpressionError(
            f"--where: {what} at position {position} ({shown!r})" + (f"; {hint}" if hint else "")
        )

    def node(self, node: ast.AST, depth: int = 0) -> Predicate:
        if depth > MAX_DEPTH:
            raise self.refuse(node, f"expression nested more than {MAX_DEPTH} deep ('not' / 'and' / 'or')")
        if isinstance(node, ast.BoolOp):
            parts = [self.node(value, depth + 1) for value in node.values]
            if isinstance(node.op, ast.And):
                return lambda row: all(part(row) for part in parts)
            return lambda row: any(part(row) for part in parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self.node(node.operand, depth + 1)
            return lambda row: not inner(row)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Name) and node.id not in _BOOLEANS:
            column = self.column(node)
            if column.kind != BOOL:
                raise self.refuse(
                    node, f"column '{column.name}' is a {column.kind}, not a bool: compare it with a value"
                )
            name = column.name
            return lambda row: row.get(name) is True
        if _is_literal(node):
            raise self.refuse(node, f"{_describe(node)} alone is not a condition; compare a column with it")
        raise self.refuse(node, f"unsupported {_describe(node)}", _HELP)

    def column(self, node: ast.Name) -> Column:
        column = self.columns.get(node.id)
        if column is None:
            raise ExpressionError(f"--where: unknown column '{node.id}' ({_known(node.id, self.columns)})")
        self.used.add(column.name)
        return column

    def literal(self, node: ast.AST) -> Any:
        if not _is_literal(node):
            found = _describe(node)
            raise self.refuse(node, f"expected a literal (a number, 'text', true or false), found {found}")
        if isinstance(node, ast.Name):
            return _BOOLEANS[node.id]
        negative = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
        constant = node.operand if isinstance(node, ast.UnaryOp) else node
        assert isinstance(constant, ast.Constant)
        value: Any = constant.value  # a bool, int, float or str (_is_literal)
        if isinstance(value, float) and not math.isfinite(value):
            raise self.refuse(node, "number out of range (a literal beyond ±1.8e308 is infinite)")
        return -value if negative else value

    def compare(self, node: ast.Compare) -> Predicate:
        if len(node.ops) != 1:
            raise self.refuse(node, "chained comparison; join comparisons with 'and'")
        op, left, right = type(node.ops[0]), node.left, node.comparators[0]
        if op not in _ORDER and op not in _EQUALITY and op not in (ast.In, ast.NotIn):
            hint = "use == or !=" if op in (ast.Is, ast.IsNot) else _HELP
            symbol = _SYMBOLS.get(op, op.__name__)
            raise self.refuse(node, f"unsupported comparison '{symbol}'", hint)
        for side in (left, right):
            if not _is_column(side) and not _is_literal(side) and not _literal_like(side):
                raise self.refuse(side, f"unsupported {_describe(side)}", _HELP)
        if _is_column(left) and _is_column(right):
            assert isinstance(left, ast.Name) and isinstance(right, ast.Name)
            self.column(left), self.column(right)  # an unknown name is named as such
            raise self.refuse(node, "comparison of two columns; compare a column with a literal")
        if op in (ast.In, ast.NotIn):
            return self.membership(node, op, left, right)
        if not _is_column(left) and not _is_column(right):
            raise self.refuse(node, "comparison without a column; compare a column with a literal")
        if _is_column(right):  # 28 <= clip_score: the column on the left
            left, right, op = right, left, _FLIPPED[op]
        assert isinstance(left, ast.Name)
        column = self.column(left)
        value = self.value(column, right, op)
        name = column.name
        if column.kind == LABEL:  # the ids of the class name (more where an output recorded it twice)
            negate = op is ast.NotEq
            return lambda row: (found := row.get(name)) is not None and ((found in value) != negate)
        test = _ORDER.get(op) or _EQUALITY[op]
        return lambda row: (found := row.get(name)) is not None and bool(test(found, value))

    def membership(self, node: ast.Compare, op: type[ast.cmpop], left: ast.AST, right: ast.AST) -> Predicate:
        """``COLUMN in [...]`` / ``COLUMN not in [...]``."""
        if not _is_column(left):
            raise self.refuse(node, f"'{_SYMBOLS[op]}' needs a column on its left")
        if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
            raise self.refuse(right, f"'{_SYMBOLS[op]}' needs a list of literals, like ['a', 'b']")
        assert isinstance(left, ast.Name)
        column = self.column(left)
        values: set[Any] = set()
        for element in right.elts:
            value = self.value(column, element, op)
            values |= value if column.kind == LABEL else {value}
        name, negate = column.name, op is ast.NotIn
        return lambda row: (value := row.get(name)) is not None and ((value in values) != negate)

    def value(self, column: Column, node: ast.AST, op: type[ast.cmpop]) -> Any:
        """The literal ``node`` as a value of ``column`` (a class label's name → the set of its ids)."""
        value = self.literal(node)
        ordered = op in _ORDER
        if column.kind == NUMBER:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.refuse(
                    node, f"column '{column.name}' is a number; cannot compare it with {_kind_of(value)}"
                )
            return value
        if column.kind == STRING:
            if not isinstance(value, str):
                raise self.refuse(
                    node, f"column '{column.name}' is a string; cannot compare it with {_kind_of(value)}"
                )
            return value
        if column.kind == BOOL:
            if not isinstance(value, bool):
                raise self.refuse(node, f"column '{column.name}' is a bool; compare it with true or false")
            if ordered:
                raise self.refuse(node, f"column '{column.name}' is a bool; use == or !=")
            return value
        # A class label: by name (compared in Unicode NFC, as labels are read), never by order.
        if ordered:
            raise self.refuse(
                node, f"column '{column.name}' is a class label; use ==, !=, in or not in with class names"
            )
        if not isinstance(value, str):
            raise self.refuse(
                node,
                f"column '{column.name}' is a class label compared by class name "
                f"('{column.names[0]}'), not a number",
            )
        wanted = _nfc(value)
        ids = frozenset(i for i, name in enumerate(column.names) if _nfc(name) == wanted)
        if not ids:
            shown = ", ".join(column.names[:8]) + (", ..." if len(column.names) > 8 else "")
            raise self.refuse(node, f"'{value}' is not a class of column '{column.name}' (classes: {shown})")
        return ids


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _is_column(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id not in _BOOLEANS


def _is_literal(node: ast.AST) -> bool:
    """A number, text, or bool literal (``-3`` and ``+3`` too)."""
    if isinstance(node, ast.Constant):
        return type(node.value) in (bool, int, float, str)
    if isinstance(node, ast.Name):
        return node.id in _BOOLEANS
    return (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float)
    )


def _literal_like(node: ast.AST) -> bool:
    """A list, or a constant or signed value that is not a literal of ours ("expected a literal")."""
    if isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.Not):
        return _literal_like(node.operand) or _is_literal(node.operand)
    return isinstance(node, (ast.Constant, ast.List, ast.Tuple, ast.Set))


def _describe(node: ast.AST) -> str:
    """The construct ``node`` is, in words (for "unsupported ..." and "found ...")."""
    for kind, text in _CONSTRUCTS.items():
        if isinstance(node, kind):
            return text
    if isinstance(node, ast.Compare):
        return "comparison " + " ".join(_SYMBOLS.get(type(op), type(op).__name__) for op in node.ops)
    if isinstance(node, ast.UnaryOp):
        symbols = {ast.USub: "-", ast.UAdd: "+", ast.Invert: "~", ast.Not: "not"}
        return f"unary {symbols.get(type(node.op), 'operator')}"
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}" if node.id not in _BOOLEANS else f"the literal {node.id}"
    if isinstance(node, ast.Constant):
        kinds: dict[type, str] = {bytes: "bytes literal ", complex: "complex number "}
        kinds |= {type(None): "", type(...): ""}
        prefix = kinds.get(type(node.value), "the literal ")
        return prefix + ("..." if node.value is ... else shorten(repr(node.value), 40))
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
