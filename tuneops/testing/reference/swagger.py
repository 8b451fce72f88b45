"""Request (and response) validation against a Swagger 2.0 document, the way Microsoft's oav does.

What a request is checked for, per operation found by method and path template:
- ``api-version`` and every other parameter: required ones present, undeclared query and form
  parameters reported, types, enums, lengths, patterns, ranges;
- the JSON body against its schema, ``$ref``s resolved across files and ``allOf`` merged:
  undeclared properties (``OBJECT_ADDITIONAL_PROPERTIES``: a model without
  ``additionalProperties`` declares exactly its properties), read-only properties sent
  (``READONLY_PROPERTY_NOT_ALLOWED_IN_REQUEST``), missing required properties, wrong types
  (``null`` included, unless ``x-nullable``), values outside an enum (strictly, extensible
  ``modelAsString`` enums too: stricter than oav), string lengths and patterns, number ranges.
Responses are checked with the same rules, except that ``null`` and read-only values are allowed
(Azure answers with nulls). ``project`` removes undeclared properties: what a lenient server
that drops unknown fields would keep.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

_INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class Violation:
    """One way a request (or response) breaks the spec; ``where`` is a JSON-path-like location."""

    operation: str
    code: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.operation} {self.code} at {self.where}: {self.message}"


@cache
def _load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _pointer(document: dict[str, Any], pointer: str) -> Any:
    node: Any = document
    for part in [p for p in pointer.split("/") if p]:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@dataclass(frozen=True)
class _Schema:
    """A schema node together with the file its ``$ref``s are relative to."""

    node: dict[str, Any]
    file: Path

    def deref(self) -> _Schema:
        node, file = self.node, self.file
        flags = {k: node[k] for k in ("readOnly", "x-nullable") if k in node}
        while "$ref" in node:
            target, _, pointer = str(node["$ref"]).partition("#")
            file = (file.parent / target).resolve() if target else file
            node = _pointer(_load(file), pointer)
            flags = {**{k: node[k] for k in ("readOnly", "x-nullable") if k in node}, **flags}
        return _Schema({**node, **flags}, file)

    def merged(self) -> _Schema:
        """``allOf`` folded in: properties and required lists of every parent, recursively."""
        schema = self.deref()
        node = dict(schema.node)
        properties = {k: _Schema(v, schema.file) for k, v in (node.get("properties") or {}).items()}
        required = set(node.get("required") or [])
        for parent_node in node.pop("allOf", []):
            parent = _Schema(parent_node, schema.file).merged()
            for key, value in parent.node.get("_properties", {}).items():
                properties.setdefault(key, value)
            required |= set(parent.node.get("required") or [])
            for key in ("type", "additionalProperties"):
                if key in parent.node and key not in node:
                    node[key] = parent.node[key]
        node["_properties"] = properties
        node["required"] = sorted(required)
        return _Schema(node, schema.file)


def _type_ok(kind: str | None, value: Any, fmt: str | None) -> bool:
    if kind is None or kind == "file":
        return True
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return ok and (fmt != "int32" or _INT32[0] <= value <= _INT32[1])
    checks: dict[str, Any] = {
        "string": lambda v: isinstance(v, str),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }
    return bool(checks.get(kind, lambda v: True)(value))


class _Walker:
    def __init__(self, operation: str, *, request: bool) -> None:
        self.operation, self.request = operation, request
        self.found: list[Violation] = []

    def report(self, code: str, where: str, message: str) -> None:
        self.found.append(Violation(self.operation, code, where, message))

    def check(self, schema: _Schema, value: Any, where: str) -> None:
        merged = schema.merged()
        node = merged.node
        if self.request and node.get("readOnly"):
            self.report(
                "READONLY_PROPERTY_NOT_ALLOWED_IN_REQUEST", where, "read-only; a client must not send it"
            )
        if value is None:
            if self.request and not node.get("x-nullable"):
                self.report("INVALID_TYPE", where, f"null is not a {node.get('type', 'value')}")
            return
        self.check_scalar(node, value, where)
        kind = node.get("type") or ("object" if node["_properties"] else None)
        if kind == "object" and isinstance(value, dict):
            self.check_object(merged, value, where)
        if kind == "array" and isinstance(value, list) and "items" in node:
            for index, item in enumerate(value):
                self.check(_Schema(node["items"], merged.file), item, f"{where}[{index}]")

    def check_scalar(self, node: dict[str, Any], value: Any, where: str) -> None:
        kind = node.get("type")
        if not _type_ok(kind, value, node.get("format")):
            self.report("INVALID_TYPE", where, f"expected {kind} ({node.get('format', '')}), got {value!r}")
            return
        if "enum" in node and value not in node["enum"]:
            self.report("ENUM_MISMATCH", where, f"{value!r} is not one of {node['enum']}")
        if isinstance(value, str):
            if len(value) < node.get("minLength", 0):
                self.report("MIN_LENGTH", where, f"shorter than {node['minLength']}")
            if "maxLength" in node and len(value) > node["maxLength"]:
                self.report("MAX_LENGTH", where, f"longer than {node['maxLength']}")
            if "pattern" in node and not re.search(node["pattern"], value):
                self.report("PATTERN", where, f"{value!r} does not match {node['pattern']}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in node and value < node["minimum"]:
                self.report("MINIMUM", where, f"{value} < {node['minimum']}")
            if "maximum" in node and value > node["maximum"]:
                self.report("MAXIMUM", where, f"{value} > {node['maximum']}")

    def check_object(self, schema: _Schema, value: dict[str, Any], where: str) -> None:
        node = schema.node
        properties: dict[str, _Schema] = node["_properties"]
        extra = node.get("additionalProperties")
        for key in node.get("required", []):
            if key not in value:
                self.report("OBJECT_MISSING_REQUIRED_PROPERTY", f"{where}.{key}", "required")
        for key, item in value.items():
            if key in properties:
                self.check(properties[key], item, f"{where}.{key}")
            elif isinstance(extra, dict):
                self.check(_Schema(extra, schema.file), item, f"{where}.{key}")
            elif extra is not True:
                self.report("OBJECT_ADDITIONAL_PROPERTIES", f"{where}.{key}", "not declared by the spec")


def _project(schema: _Schema, value: Any) -> Any:
    merged = schema.merged()
    node = merged.node
    if isinstance(value, dict) and (node.get("type") == "object" or node["_properties"]):
        properties: dict[str, _Schema] = node["_properties"]
        extra = node.get("additionalProperties")
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if key in properties:
                kept[key] = _project(properties[key], item)
            elif isinstance(extra, dict):
                kept[key] = _project(_Schema(extra, merged.file), item)
            elif extra is True:
                kept[key] = item
        return kept
    if isinstance(value, list) and node.get("type") == "array" and "items" in node:
        return [_project(_Schema(node["items"], merged.file), item) for item in value]
    return value


@dataclass(frozen=True)
class Operation:
    """One operation of the spec: its id, resolved parameters, body schema and responses."""

    operation_id: str
    method: str
    template: str
    parameters: tuple[dict[str, Any], ...]
    body: _Schema | None
    responses: dict[str, _Schema | None]

    def response_schema(self, status: int) -> _Schema | None:
        return self.responses.get(str(status)) or self.responses.get("default")


class SwaggerSpec:
    """One Swagger 2.0 file; ``base_path`` is what the server puts before its paths (``/openai``)."""

    def __init__(self, path: Path, base_path: str = "") -> None:
        self.path = path.resolve()
        self.document = _load(self.path)
        self.version = str(self.document["info"]["version"])
        self.base_path = base_path
        self._operations: list[tuple[re.Pattern[str], Operation]] = []
        for template, item in self.document["paths"].items():
            shared = item.get("parameters", [])
            for method, op in item.items():
                if method == "parameters":
                    continue
                params = tuple(self._param(p) for p in [*shared, *op.get("parameters", [])])
                body = next((p for p in params if p["in"] == "body"), None)
                responses = {
                    code: _Schema(r["schema"], self.path) if r and "schema" in r else None
                    for code, r in op.get("responses", {}).items()
                }
                operation = Operation(
                    op["operationId"],
                    method.upper(),
                    template,
                    params,
                    _Schema(body["schema"], self.path) if body else None,
                    responses,
                )
                regex = re.escape(base_path + template)
                regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", regex)
                self._operations.append((re.compile(f"^{regex}$"), operation))

    def _param(self, param: dict[str, Any]) -> dict[str, Any]:
        schema = _Schema(param, self.path).deref()
        return dict(schema.node)

    def operation(self, method: str, path: str) -> Operation | None:
        for pattern, operation in self._operations:
            if operation.method == method.upper() and pattern.match(path):
                return operation
        return None

    def validate_request(
        self,
        operation: Operation,
        query: dict[str, list[str]],
        body: Any = None,
        form: dict[str, Any] | None = None,
    ) -> list[Violation]:
        """Every way this request breaks the spec (an empty list: it conforms)."""
        walker = _Walker(operation.operation_id, request=True)
        for where, given in (("query", query), ("formData", form or {})):
            declared = {p["name"]: p for p in operation.parameters if p["in"] == where}
            for name in given:
                if name not in declared:
                    walker.report(
                        "UNDECLARED_PARAMETER", f"{where}.{name}", "not a parameter of this operation"
                    )
            for name, param in declared.items():
                if name not in given:
                    if param.get("required"):
                        walker.report("MISSING_REQUIRED_PARAMETER", f"{where}.{name}", "required")
                    continue
                raw = given[name]
                value = raw[0] if isinstance(raw, list) else raw
                if param.get("type") in ("integer", "number") and isinstance(value, str):
                    try:
                        value = int(value) if param["type"] == "integer" else float(value)
                    except ValueError:
                        walker.report(
                            "INVALID_TYPE", f"{where}.{name}", f"{value!r} is not a {param['type']}"
                        )
                        continue
                walker.check_scalar(param, value, f"{where}.{name}")
        if operation.body is not None:
            if body is None:
                walker.report("MISSING_REQUIRED_PARAMETER", "body", "the operation needs a body")
            else:
                walker.check(operation.body, body, "body")
        return walker.found

    def validate_response(self, operation: Operation, status: int, body: Any) -> list[Violation]:
        schema = operation.response_schema(status)
        if schema is None or body is None:
            return []
        walker = _Walker(f"{operation.operation_id} response {status}", request=False)
        walker.check(schema, body, "body")
        return walker.found

    def project_request(self, operation: Operation, body: Any) -> Any:
        """The body with undeclared properties removed, as a server dropping unknown fields sees it."""
        return body if operation.body is None else _project(operation.body, body)

    def project_response(self, operation: Operation, status: int, body: Any) -> Any:
        schema = operation.response_schema(status)
        return body if schema is None else _project(schema, body)
