"""Method definitions of protocol/methods/ and the checks both sides make against them."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "object": (dict,),
    "array": (list,),
}


@cache
def definitions() -> dict[str, dict[str, Any]]:
    """Method name ("SWUpdate.Update") -> its JSON definition."""
    folder = resources.files("uartupdate") / "protocol" / "methods"
    return {
        entry.name.removesuffix(".json"): json.loads(entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    }


def method_name(cmd: str) -> str:
    """'/v1/SWUpdate.Update' -> 'SWUpdate.Update' (the `/v1/` prefix is optional)."""
    return cmd.removeprefix("/v1/")


def check_value(value: Any, schema: dict[str, Any], where: str) -> str | None:
    """The first way `value` breaks `schema` (the JSON-schema subset the definitions use), or None."""
    expected = schema.get("type")
    if expected is not None:
        types = _TYPES[expected]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            return f"{where} must be of type {expected}"
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                return f"{where}.{name} is required"
        props = schema.get("properties")
        if props is not None:
            for name, item in value.items():
                if name not in props:
                    return f"unknown argument {where}.{name}"
                problem = check_value(item, props[name], f"{where}.{name}")
                if problem:
                    return problem
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problem = check_value(item, schema["items"], f"{where}[{i}]")
            if problem:
                return problem
    return None


def check_args(method: str, args: dict[str, Any]) -> str | None:
    """Why `args` do not fit the definition of `method`, or None when they do."""
    spec = definitions()[method]
    schema = {"type": "object", "properties": spec.get("args", {}), "required": spec.get("required", [])}
    return check_value(args, schema, "args")


def check_result(method: str, result: Any) -> str | None:
    spec = definitions()[method]
    return check_value(result, spec["result"], "resp") if "result" in spec else None
