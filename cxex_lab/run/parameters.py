"""Notebook parameters: what a notebook declares (read with papermill's own
``inspect_notebook``) and how a value given on the command line is checked
against it before anything runs."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cxex_lab.run.errors import RunnerError

__all__ = ["RUNNER_PARAMS", "notebook_parameters", "coerce_parameter", "parse_cli_params", "check_parameters"]

#: Parameters the runner sets itself (``--data``, ``--segments``); never given with ``-p``.
RUNNER_PARAMS: dict[str, str] = {"data_dir": "--data", "segment": "--segments"}

_TYPES = ("int", "float", "bool", "str", "list", "dict")
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def _annotation_type(annotation: str | None) -> str | None:
    """``"int"`` from ``int``, ``Optional[int]``, ``int | None``, ``list[int]``; else None."""
    if not annotation or annotation == "None":
        return None
    text = annotation.replace("Optional[", "").replace("None", "").replace("|", " ").strip(" []")
    words = text.split("[")[0].split()
    if not words:
        return None
    name = words[0].lower()
    if name == "tuple":
        name = "list"
    return name if name in _TYPES else None


def notebook_parameters(path: str | Path) -> dict[str, dict[str, Any]]:
    """Parameters declared in a notebook's ``parameters``-tagged cell.

    Read with :func:`papermill.inspect_notebook` (the parser papermill itself uses
    to inject parameters), so the runner and papermill cannot disagree about what
    a notebook declares.

    Returns
    -------
    dict
        name -> ``{"default": <python value or None>, "type": <type name>,
        "source": <default as written>, "help": <the line's comment>}``. The type
        is the annotation's when there is one (``x: float = 1``), else that of the
        default's literal value (``int``, ``float``, ``bool``, ``str``, ``list``,
        ``dict``, ``NoneType``), else ``"any"``. Tuples count as lists.

    Raises
    ------
    RunnerError
        When the notebook cannot be read.
    """
    from papermill.inspection import inspect_notebook

    path = Path(path)
    try:
        declared = inspect_notebook(str(path))
    except Exception as err:  # noqa: BLE001 - papermill raises several kinds; say which notebook
        raise RunnerError(f"{path.name}: cannot read its parameters ({type(err).__name__}: {err})") from None
    out: dict[str, dict[str, Any]] = {}
    for name, p in declared.items():
        source = str(p.get("default", "")).strip()
        try:
            default = ast.literal_eval(source)
            type_name = type(default).__name__
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            default, type_name = None, "any"
        if type_name == "tuple":
            default, type_name = list(default), "list"
        annotated = _annotation_type(p.get("inferred_type_name"))
        if annotated and (type_name in ("any", "NoneType") or annotated != type_name):
            type_name = annotated
        out[name] = {"default": default, "type": type_name, "source": source, "help": p.get("help", "")}
    return out


def coerce_parameter(name: str, value: Any, type_name: str, notebook: str = "") -> Any:
    """Convert ``value`` (a CLI string or a Python value) to the type of the default.

    Raises
    ------
    RunnerError
        When the value does not fit, naming the parameter, the expected type and the
        notebook's default.
    """
    where = f" in {notebook}" if notebook else ""

    def bad(expected: str) -> RunnerError:
        return RunnerError(f"parameter {name}={value!r} is not a valid {expected}{where} "
                           f"(the notebook's default is of type {type_name})")

    if isinstance(value, str):
        raw = value.strip()
        if type_name == "bool":
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise bad("bool (use true/false)")
        if type_name == "int":
            try:
                return int(raw)
            except ValueError:
                raise bad("integer") from None
        if type_name == "float":
            try:
                return float(raw)
            except ValueError:
                raise bad("number") from None
        if type_name == "str":
            return value
        if type_name in ("list", "dict"):
            example = "[1, 2]" if type_name == "list" else '{"a": 1}'
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError:
                raise bad(f"{type_name} (give JSON, e.g. {example})") from None
            if not isinstance(parsed, list if type_name == "list" else dict):
                raise bad(f"{type_name} (give JSON, e.g. {example})")
            return parsed
        # NoneType / any: JSON if it parses, else the string
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return value
    # a Python value from the API
    if type_name == "bool" and not isinstance(value, bool):
        raise bad("bool")
    if type_name == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad("integer")
    if type_name == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("number")
        return float(value)
    if type_name == "str" and not isinstance(value, str):
        raise bad("string")
    if type_name == "list":
        if not isinstance(value, (list, tuple)):
            raise bad("list")
        return list(value)
    if type_name == "dict" and not isinstance(value, dict):
        raise bad("dict")
    return value


def parse_cli_params(items: Sequence[str] | None) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` (values stay strings)."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise RunnerError(f"parameter {item!r} must look like name=value")
        name, raw = item.split("=", 1)
        out[name.strip()] = raw
    return out


def check_parameters(params: Mapping[str, Any], declared: Mapping[Path, Mapping[str, Mapping]]) -> None:
    """Refuse runner-owned and undeclared parameter names (before anything runs).

    ``declared`` maps each selected notebook to :func:`notebook_parameters`.
    """
    for reserved, flag in RUNNER_PARAMS.items():
        if reserved in params:
            raise RunnerError(f"parameter {reserved!r} is set by the runner; use {flag} instead")
    valid = sorted(set().union(*(d.keys() for d in declared.values())) - set(RUNNER_PARAMS))
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise RunnerError(f"unknown parameter(s) {', '.join(unknown)}: not declared by any selected notebook; "
                          f"valid names: {', '.join(valid) or 'none'}")


def notebook_values(params: Mapping[str, Any], declared: Mapping[str, Mapping], notebook: str) -> dict[str, Any]:
    """The subset of ``params`` a notebook declares, each coerced to its declared type."""
    return {name: coerce_parameter(name, value, declared[name]["type"], notebook)
            for name, value in params.items() if name in declared}
