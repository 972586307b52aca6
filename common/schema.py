"""The project's own JSON files read back: size and depth limits, finite numbers, and every field the code
uses checked for its type before anything acts on it.

A marker, config.json or metrics.json may be damaged or edited by hand; taken on trust, a wrong type would
aim a removal at the wrong files, mix runs, or end in a traceback. `load` turns any such file into one
line naming the file and the field.

A spec is a Python type (`str`, `int`, `float` for any finite number, `bool`, `None`), a tuple of specs (any
one of them), a list of one spec (a list of such values), or one of the classes below.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from pathlib import Path

from common.errors import UserError

MAX_BYTES = 16 << 20  # a marker or metrics.json is a few KB; config.json lists excluded rows
MAX_DEPTH = 24  # the deepest of our files nests 6 levels


class Invalid(ValueError):
    """A value that does not match its spec; `where` is its place in the document (`entries[0]`)."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where or 'the document'}: {problem}")


class DamagedFile(UserError):
    """One of our files that cannot be used: not JSON, beyond the limits, or a field of the wrong type."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: damaged ({problem})")


class Spec:
    """A spec of more than a type: says what it expects, and checks a value."""

    says = "a JSON value"

    def check(self, value, where: str) -> None:
        raise NotImplementedError


class Fields(Spec):
    """An object with these fields (`optional` ones may be missing); other fields are kept unchecked, or with
    `closed` refused."""

    says = "an object"

    def __init__(self, required: dict, optional: dict | None = None, closed: bool = False):
        self.required, self.optional, self.closed = required, optional or {}, closed

    def check(self, value, where: str) -> None:
        _expect(isinstance(value, dict), value, self, where)
        unknown = [k for k in value if k not in self.required and k not in self.optional] if self.closed else []
        if unknown:
            raise Invalid(_at(where, unknown[0]), "a field this version does not know (a newer version wrote it?)")
        for key, spec in self.required.items():
            if key not in value:
                raise Invalid(_at(where, key), "missing")
            check(value[key], spec, _at(where, key))
        for key, spec in self.optional.items():
            if key in value:
                check(value[key], spec, _at(where, key))


class Map(Spec):
    """An object of any keys (or of `keys` only: a tuple of names, or a spec of a string), each value matching
    `spec`."""

    says = "an object"

    def __init__(self, spec, keys: tuple | None = None):
        self.spec, self.keys = spec, keys

    def check(self, value, where: str) -> None:
        _expect(isinstance(value, dict), value, self, where)
        for key, item in value.items():
            if isinstance(self.keys, Spec):
                self.keys.check(key, _at(where, key))
            elif self.keys is not None and key not in self.keys:
                raise Invalid(_at(where, key), f"not one of {', '.join(self.keys)}")
            check(item, self.spec, _at(where, key))


class Choice(Spec):
    """One of these values."""

    def __init__(self, *values):
        self.values = values
        self.says = "one of " + ", ".join(json.dumps(v) for v in values)

    def check(self, value, where: str) -> None:
        _expect(any(value == v and type(value) is type(v) for v in self.values), value, self, where)


class Rule(Spec):
    """A value matching `spec` for which `test` holds; `says` describes what is expected."""

    def __init__(self, spec, test, says: str):
        self.spec, self.test, self.says = spec, test, says

    def check(self, value, where: str) -> None:
        if isinstance(self.spec, type):  # a value of a plain type is told what the rule expects of it
            _expect(_is(value, self.spec), value, self, where)
        else:
            check(value, self.spec, where)
        _expect(self.test(value), value, self, where)


ANY = object()  # any JSON value (within the depth limit)


def name_in_folder(name: str) -> bool:
    """A plain file or folder name: never a path, `.` or `..`, so an edited list cannot aim outside its folder."""
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name and "\0" not in name


NAME = Rule(str, name_in_folder, "a file name inside the folder")


def count(low: int, high: int | None = None) -> Rule:
    """An integer from `low` to `high` (no upper bound without one)."""
    return Rule(int, lambda n: n >= low and (high is None or n <= high), f"an integer {low}..{high or ''}")


def of_dataclass(cls) -> Fields:
    """The spec of a dataclass of plain fields (str, int, float, bool, or one of them or None): the fields
    without a default required, no others allowed."""
    hints = typing.get_type_hints(cls)

    def plain(hint):
        options = typing.get_args(hint)
        return tuple(None if o is type(None) else o for o in options) if options else hint

    fields = dataclasses.fields(cls)
    required = {f.name: plain(hints[f.name]) for f in fields if f.default is dataclasses.MISSING}
    optional = {f.name: plain(hints[f.name]) for f in fields if f.default is not dataclasses.MISSING}
    return Fields(required, optional, closed=True)


def _describe(spec) -> str:
    if spec is None:
        return "null"
    if isinstance(spec, tuple):
        return " or ".join(_describe(s) for s in spec)
    if isinstance(spec, list):
        return f"a list of {_describe(spec[0])}"
    if isinstance(spec, Spec):
        return spec.says
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(spec, "a JSON value")


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _at(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


def _expect(ok: bool, value, spec, where: str) -> None:
    if not ok:
        raise Invalid(where, f"{_short(value)}, expected {_describe(spec)}")


def _is(value, kind) -> bool:
    """Whether `value` is of the plain spec `kind` (a bool is not a number here)."""
    if kind is None:
        return value is None
    if kind in (int, float):
        return isinstance(value, int if kind is int else int | float) and not isinstance(value, bool)
    return isinstance(value, kind)


def check(value, spec, where: str = "") -> None:
    """Raise Invalid unless `value` matches `spec`."""
    if spec is ANY:
        return
    if isinstance(spec, Spec):
        return spec.check(value, where)
    if isinstance(spec, tuple):
        for option in spec:
            if option is None or isinstance(option, type):  # a plain type: no failure to describe
                if _is(value, option):
                    return
                continue
            try:
                return check(value, option, where)
            except Invalid:
                continue
        _expect(False, value, spec, where)
    if isinstance(spec, list):
        _expect(isinstance(value, list), value, spec, where)
        for k, item in enumerate(value):
            check(item, spec[0], f"{where}[{k}]")
        return
    _expect(_is(value, spec), value, spec, where)


def _depth(value) -> int:
    """How deep lists and objects nest in `value` (without recursion: a document may nest thousands deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text} is beyond the range of a double")
    return number


def _no_constants(name: str):
    raise ValueError(f"{name} is not a number this project writes")


def parse(text: str | bytes, spec=ANY):
    """The JSON document in `text`, checked against `spec`; a problem raises Invalid (or ValueError)."""
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    check(value, spec)
    return value


def load(path: str | Path, spec=ANY, max_bytes: int = MAX_BYTES):
    """The JSON file at `path`, checked against `spec`; DamagedFile (one line) when it cannot be used."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise ValueError(f"{size} bytes, more than the {max_bytes} this file may hold")
            raw = f.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise ValueError(f"more than the {max_bytes} bytes this file may hold")
        return parse(raw.decode("utf-8"), spec)
    except UnicodeDecodeError as err:
        raise DamagedFile(path, f"not UTF-8 text: {err.reason} at byte {err.start}") from None
    except json.JSONDecodeError as err:
        raise DamagedFile(path, f"not JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except (ValueError, OSError) as err:  # Invalid is a ValueError
        raise DamagedFile(path, getattr(err, "strerror", None) or str(err)) from None
