"""Validation errors of the config models as one line naming each key the way the YAML writes it.

pydantic reports a key that accepts several shapes (a Union: a string or a mapping, a number or
'auto') once per shape, with the shape's name in the location (`retention.0.str`,
`retention.0.RetentionSpec.bogus`). The user meant one shape, told by what they wrote: only that
one is reported, and key paths are written as in the YAML (`retention[0].bogus`).
"""
from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError


@dataclass
class _Where:
    path: tuple  # the user's keys and list positions, e.g. ('retention', 0, 'bogus')
    owner: Optional[type] = None  # the model the last key was looked up in: its keys are the allowed ones
    union: Optional[tuple] = None  # the path of the first key on the way that accepts several shapes
    branch: Any = None  # the shape (Union member) pydantic tried for this error
    members: tuple = ()  # every shape that key accepts
    nullable: bool = False  # that key accepts null as well
    nested: bool = False  # the error lies inside the shape: what the user wrote had that shape
    shape: Any = None  # the annotation of the key itself


def _shapes(ann) -> tuple[tuple, bool]:
    """(the members of a Union other than None, whether None is one); ((ann,), False) otherwise."""
    if get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    if get_origin(ann) in (Union, types.UnionType):
        members = tuple(a for a in get_args(ann) if a is not type(None))
        return members, len(members) < len(get_args(ann))
    return (ann,), False


def _is_model(ann) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _tag_of(member, part) -> bool:
    """Whether `part` of an error location is pydantic's name for Union member `member`."""
    if not isinstance(part, str):
        return False
    origin = get_origin(member)
    if origin is Literal:
        return part.startswith("literal[")
    if origin in (list, dict):
        return part.startswith(f"{origin.__name__}[")
    return part == getattr(member, "__name__", None)


def _child(ann, part):
    """The annotation at key or position `part` inside `ann` (Any when it cannot be followed)."""
    if _is_model(ann) and isinstance(part, str) and part in ann.model_fields:
        return ann.model_fields[part].annotation
    if get_origin(ann) is list and isinstance(part, int):
        return get_args(ann)[0]
    if get_origin(ann) is dict:
        return get_args(ann)[1]
    return Any


def _walk(model_cls: type[BaseModel], loc: tuple) -> _Where:
    """Follow an error location through the model's annotations, telling keys from shape names."""
    where, path, ann = _Where(()), [], model_cls
    for part in loc:
        members, nullable = _shapes(ann)
        branch = next((m for m in members if _tag_of(m, part)), None) if len(members) > 1 else None
        if branch is not None:  # a shape's name, not a key of the user's
            if where.union is None:
                where.union, where.branch, where.members, where.nullable = tuple(path), branch, members, nullable
            ann = branch
            continue
        ann = members[0] if len(members) == 1 else ann
        if _is_model(ann):
            where.owner = ann
        ann = _child(ann, part)
        if not (isinstance(part, str) and "[" in part):  # a validator's name the walk could not place
            path.append(part)
    where.path, where.shape = tuple(path), ann
    where.nested = where.union is not None and len(path) > len(where.union)
    return where


def _key(path: tuple) -> str:
    """('retention', 0, 'bogus') -> 'retention[0].bogus', as the user would point at it in the YAML."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _unknown_key(where: _Where) -> str:
    allowed = [k for k, f in where.owner.model_fields.items() if not f.exclude] if where.owner else []
    close = difflib.get_close_matches(str(where.path[-1]), allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{_key(where.path)}: unknown key ({hint}allowed: {', '.join(allowed)})"


def _got(value) -> str:
    if isinstance(value, dict):
        return " (got a mapping)"
    return " (got a list)" if isinstance(value, list) else f" (got {value!r})"


def _problem(e: dict, where: _Where) -> str:
    """One pydantic error as 'key: what is wrong (got ...)'."""
    if e["type"] == "extra_forbidden":
        return _unknown_key(where)
    if e["type"] == "missing":
        return f"{_key(where.path)}: required key is missing"
    got = e.get("input")
    models = [m for m in _shapes(where.shape)[0] if _is_model(m)]
    if e["type"] == "model_type" and len(models) == 1:  # pydantic names the class: name its keys instead
        return f"{_key(where.path)}: must be {_noun(models[0])}{_got(got)}"
    msg = e["msg"].replace("Input should be", "must be").replace("Value error, ", "")
    return f"{_key(where.path)}: {msg}{'' if isinstance(got, (dict, list)) else _got(got)}"


_NOUNS = {str: ("a string", "strings"), int: ("an integer", "integers"), float: ("a number", "numbers"),
          bool: ("true, false", "booleans")}


def _noun(member) -> str:
    """How a message names one shape: 'a string', 'a list of integers', 'a mapping of task, limit'."""
    origin = get_origin(member)
    if origin is Literal:
        return " or ".join(str(a) for a in get_args(member))
    if origin is list:
        inner = get_args(member)[0]
        return f"a list of {_NOUNS[inner][1]}" if inner in _NOUNS else "a list"
    if _is_model(member):
        return f"a mapping of {', '.join(k for k, f in member.model_fields.items() if not f.exclude)}"
    if origin is dict or member is dict:
        return "a mapping"
    return _NOUNS[member][0] if member in _NOUNS else getattr(member, "__name__", str(member))


def _kind(shape=None, *, value=None) -> str:
    """'mapping', 'list' or 'scalar': of a Union member (`shape`) or of what the user wrote (`value`)."""
    if shape is not None:
        value = {} if _is_model(shape) or get_origin(shape) is dict or shape is dict else (
            [] if get_origin(shape) is list else None)
    return "mapping" if isinstance(value, dict) else ("list" if isinstance(value, list) else "scalar")


def _union_problems(errors: list[tuple[dict, _Where]]) -> list[str]:
    """The problems of one key that accepts several shapes, for the shape the user meant only.

    An error inside a shape means the user wrote that shape (a mapping with a bad key): keep those.
    Otherwise every shape refused the value outright: name the shapes of the value's kind (a
    scalar: the scalar ones), or every shape when none is of its kind.
    """
    inside = [(e, w) for e, w in errors if w.nested]
    if inside:
        return [_problem(e, w) for e, w in inside if w.branch is inside[0][1].branch]
    first, where = errors[0]
    got = first.get("input")
    meant = [m for m in where.members if _kind(m) == _kind(value=got)]
    if len(meant) == 1:  # pydantic's own words for that shape are the most precise
        return [_problem(e, w) for e, w in errors if w.branch is meant[0]][:1]
    nouns = [_noun(m) for m in meant or where.members] + (["null"] if where.nullable and not meant else [])
    return [f"{_key(where.union)}: must be {', '.join(nouns[:-1])} or {nouns[-1]}{_got(got)}"]


def problems(model_cls: type[BaseModel], err: ValidationError) -> list[str]:
    """Each problem of `err` as 'key: what is wrong (got ...)', a Union key's for the meant shape only."""
    groups: dict[Any, list] = {}
    for e in err.errors():
        where = _walk(model_cls, tuple(e["loc"]))
        groups.setdefault(where.union if where.union is not None else object(), []).append((e, where))
    out: list[str] = []
    for items in groups.values():
        for p in _union_problems(items) if items[0][1].union is not None else [_problem(e, w) for e, w in items]:
            if p not in out:
                out.append(p)
    return out
