"""Liveness and readiness, for load balancers and orchestrators."""

import asyncio
import logging

from fastapi import APIRouter
from pydantic import BaseModel

from backend.errors import ServiceUnavailable, describe_database_error, is_database_unusable
from backend.infrastructure import DatabaseDep
from backend.openapi import problem_responses, success_response

router = APIRouter(tags=["operations"])
logger = logging.getLogger("backend.health")

READY_TIMEOUT_SECONDS = 2.0


class Status(BaseModel):
    status: str


@router.get(
    "/health",
    summary="Liveness",
    operation_id="health",
    responses=success_response(200, description="The process is up.", example={"status": "ok"}),
)
async def health() -> Status:
    """200 while the process is up and serving; it checks nothing else."""
    return Status(status="ok")


@router.get(
    "/ready",
    summary="Readiness",
    operation_id="ready",
    responses={
        **success_response(200, description="The database answers.", example={"status": "ready"}),
        **problem_responses(
            descriptions={503: "The database does not answer, or is not migrated."}
        ),
    },
)
async def ready(database: DatabaseDep) -> Status:
    """200 when the database answers a query within two seconds and its schema is this
    version's, 503 otherwise."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await database.ping()
            migrated = await database.migrated()
    except Exception as exc:
        if not is_database_unusable(exc):
            raise
        logger.warning(
            "not ready: the database cannot be used: %s: %s",
            type(exc).__name__,
            describe_database_error(exc),
        )
        raise ServiceUnavailable("The database does not answer.") from exc
    if not migrated:
        logger.warning(
            "not ready: the database schema is not at this version's revision; "
            "run `todo-api migrate`"
        )
        raise ServiceUnavailable("The database is not migrated to this version's schema.")
    return Status(status="ready")
