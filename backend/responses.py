"""JSON responses from models that are already valid.

A route that returns a Pydantic model has FastAPI validate it again against the response model
before serialising it. Our services build their response models from database rows, so routes
serialise them directly (in Rust, through pydantic-core) and declare `response_model` only for
the OpenAPI document.
"""

from collections.abc import Mapping

from pydantic import BaseModel
from starlette.responses import Response


def json_response(
    model: BaseModel, *, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        model.__pydantic_serializer__.to_json(model),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )
