"""Check a body against OpenAI's published OpenAPI description, the way every contract test does.

OpenAI's file is OpenAPI 3.0 (``nullable: true``, boolean ``exclusiveMinimum``); the validator
speaks JSON Schema 2020-12, so the schemas are rewritten once. ``TUNEOPS_OPENAI_OPENAPI`` points
at another copy of the file (a newer one, say) instead of the one shipped here.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from tuneops.testing.reference import OPENAI_OPENAPI


def openapi30_to_jsonschema(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 idioms as JSON Schema 2020-12.

    ``nullable: true`` becomes ``anyOf [schema, {"type": "null"}]``; boolean
    ``exclusiveMinimum``/``exclusiveMaximum`` (3.0) become the numeric bound (a validator would
    otherwise read ``true`` as the number 1).
    """
    if isinstance(node, list):
        return [openapi30_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: openapi30_to_jsonschema(value) for key, value in node.items() if key != "nullable"}
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(converted.get(exclusive), bool) and converted.pop(exclusive) and bound in converted:
            converted[exclusive] = converted.pop(bound)
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def openai_reference() -> Path:
    """The OpenAI OpenAPI file in use: ``TUNEOPS_OPENAI_OPENAPI``, else the shipped copy."""
    return Path(os.environ.get("TUNEOPS_OPENAI_OPENAPI") or OPENAI_OPENAPI)


@functools.cache
def _components(path: Path) -> dict[str, Any]:
    document = openapi30_to_jsonschema(json.loads(path.read_text(encoding="utf-8")))
    return dict(document["components"])


def openai_components() -> dict[str, Any]:
    """The reference's ``components`` (schemas and all), rewritten for JSON Schema 2020-12."""
    return _components(openai_reference())


def schema_errors(name: str, body: Any, *, limit: int = 5) -> list[str]:
    """Why ``body`` is not a valid ``#/components/schemas/NAME`` (empty when it is)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": openai_components()}
    )
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    return [f"{list(e.path)}: {e.message}" for e in errors[:limit]]


def assert_matches(name: str, body: Any) -> None:
    """Fail with the first few reasons when ``body`` does not validate as schema ``name``."""
    errors = schema_errors(name, body)
    assert not errors, f"{name}: " + "; ".join(errors)
