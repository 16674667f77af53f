"""Keeping every service's OpenAPI true to what the code accepts and answers.

Clients are generated from these documents and schemathesis tests the services against them
(`tests/integration/test_openapi_conformance.py`), so a rule the code enforces is also written
in the schema: bodies are strict JSON (no `0` for false, no `"5"` for 5), "exactly one of" is a
`oneOf`, and the errors every route can give (an unparsable body, a body over the limit) are
documented on every route.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import BaseModel, BeforeValidator, ConfigDict

from services.common.errors import ErrorResponse

ERROR_SCHEMA_REF = {"$ref": "#/components/schemas/ErrorResponse"}


class JsonBody(BaseModel):
    """A JSON request body, validated as strictly as its schema reads: booleans are true or
    false, numbers are numbers. (Enum fields take their values with `Field(strict=False)`: in
    strict mode pydantic would want enum instances, which JSON cannot carry.)"""

    model_config = ConfigDict(strict=True)


def _whole_number(value: Any) -> Any:
    """JSON Schema counts 370.0 as an integer; so does seavl."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer in a strict body: 5 or 5.0, never "5" or true. Put after any constraints
# (`Annotated[int, Field(gt=0), WHOLE_NUMBER]`), so that the schema still states them.
WHOLE_NUMBER = BeforeValidator(_whole_number)
JsonInt = Annotated[int, WHOLE_NUMBER]


def _present(name: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}}}


def _non_empty(name: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"type": "array", "minItems": 1}}}


def exactly_one_of(*names: str) -> dict[str, Any]:
    """JSON-schema words for "exactly one of these fields is given (not null)"."""
    return {"oneOf": [_present(name) for name in names]}


def at_least_one_of(*names: str, lists: bool = False) -> dict[str, Any]:
    """ "One or more of these fields is given" (not null; for lists, not empty)."""
    return {"anyOf": [_non_empty(name) if lists else _present(name) for name in names]}


def needed_with(needed: str, field: str, field_is_list: bool = False) -> dict[str, Any]:
    """ "`needed` is given whenever `field` is" (a list `field`: whenever it is not empty)."""
    condition = _non_empty(field) if field_is_list else _present(field)
    return {"if": condition, "then": _present(needed)}


def all_of(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"allOf": list(rules)}


def given(model: BaseModel, *names: str) -> list[str]:
    """The fields among `names` that a request gave a value (null counts as not given)."""
    return [name for name in names if getattr(model, name) is not None]


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        reference = node.get("$ref", "")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            return _inline(definitions[reference.removeprefix("#/$defs/")], definitions)
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    return node


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its definitions written in place, for a body a route parses
    itself (`openapi_extra`): a `#/$defs/...` reference would point nowhere in the document."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inline(schema, definitions)
    return inlined


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": ERROR_SCHEMA_REF}},
    }


def document_shared_errors(app: FastAPI, max_body_bytes: int | None) -> None:
    """Adds to the app's OpenAPI the answers any route with a body can give before its own code
    runs: 400 for a body that cannot be parsed, 413 past the body limit."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(error_schema.pop("$defs", {}))
        components.setdefault("ErrorResponse", error_schema)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if "requestBody" not in operation:
                    continue
                responses = operation.setdefault("responses", {})
                responses.setdefault("400", _error("The body cannot be parsed"))
                if max_body_bytes is not None:
                    responses.setdefault(
                        "413", _error(f"The body is over the limit of {max_body_bytes} bytes")
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_page_limit(app: FastAPI, max_page_size: int) -> None:
    """Writes the configured largest page into the OpenAPI of every `limit` query parameter, so
    the schema says what the route enforces (a setting, so it cannot be in the annotation)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "query" and parameter.get("name") == "limit":
                        parameter.setdefault("schema", {})["maximum"] = max_page_size
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
