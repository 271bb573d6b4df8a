"""Errors: one problem shape everywhere (responses, the schema, the examples of the document)."""

from typing import Any

import httpx
from fastapi import FastAPI

from backend.errors import PROBLEM_MEDIA_TYPE, Problem, problem_body
from tests.helpers import assert_problem


def test_the_problem_schema_has_the_members_of_the_body_in_their_order() -> None:
    body = problem_body(status=400, code="validation_error", detail="d", request_id="r", errors=[])
    assert list(body) == list(Problem.model_fields)
    without_errors = problem_body(status=404, code="not_found", detail="d", request_id="r")
    assert list(without_errors) == [name for name in Problem.model_fields if name != "errors"]


def _problem_examples(document: dict[str, Any]) -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = []
    for path_item in document["paths"].values():
        for operation in path_item.values():
            for response in operation["responses"].values():
                media = response.get("content", {}).get(PROBLEM_MEDIA_TYPE, {})
                examples.extend(example["value"] for example in media.get("examples", {}).values())
    return examples


async def test_the_documents_examples_have_the_members_of_real_error_responses(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    not_found = assert_problem(await client.get("/no/such/route"), 404, "not_found")
    invalid = assert_problem(
        await client.post("/api/auth/login", json={"email": "a@example.com"}),
        400,
        "validation_error",
    )
    examples = _problem_examples(app.openapi())
    assert {example["code"] for example in examples} >= {"not_found", "validation_error"}
    for example in examples:
        real = invalid if example["code"] == "validation_error" else not_found
        assert set(example) == set(real), example["code"]
