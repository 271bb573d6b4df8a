"""The floor: the least a Python ASGI app must do per request for the benchmarked task routes,
which is what the contract makes unavoidable and nothing more.

Starlette + asyncpg + orjson, served by uvicorn with the service's own settings (uvloop,
httptools, no access log, same worker count). Per request it does the same work as the
service's route and gives the same answer:

- verify the bearer token: the same EdDSA JWT (PyJWT, public key parsed once), with the same
  issuer, audience, leeway, required claims and `typ`; the path's user id must be its subject;
- run the route's owner-scoped statements, with the token's revocation checked inside them (the
  owner's row must exist, be a local account, and not have revoked tokens issued before this
  one's `iat`): no round trip of its own for the user;
- list: one statement: the owner's row (its revision, for the list's weak ETag, and its number
  of live tasks, the `total`) joined to the page of the 20 newest (created_at desc, id desc; one
  more row read, to know whether a next page exists), answered as {"items": [...], "total",
  "limit", "offset", "next_cursor"} with the service's field formats and cursor;
- get one: one statement: the owner's row joined to the live task by id, with its ETag (its
  version);
- create: bump the user's revision (reading the user's first position in the same statement),
  then insert the task with that revision and the position before it (computed by the service's
  own `positions.key_between`), in one transaction;
- toggle: one owner-scoped UPDATE ... RETURNING that bumps the user's revision in a WITH clause
  and the task's version, as the service's does.

What it leaves out is what the floor is for: no user lookup of its own, no rate limit, no task
cap or counter, no framework dependency solving, no ORM, no validation models, no middleware,
no logging. Reads run without an explicit transaction (each statement is atomic on its own).

    FLOOR_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/todo_bench \
    FLOOR_JWT_PUBLIC_KEY="$(cat public.pem)" python bench/floor.py --port 8100 --workers 2
"""

import argparse
import base64
import hashlib
import math
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import orjson
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.services.positions import key_between

_REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PRIORITY_NAMES = {1: "low", 2: "medium", 3: "high"}
_PRIORITY_RANKS = {name: rank for rank, name in _PRIORITY_NAMES.items()}
# The statements spelled out in full: what the floor sends is exactly what is read here. $1 is
# always the owner, $2 the token's `iat` (as a timestamp): the owner's row passes only if the
# tokens issued then are not revoked.
_OWNER = """
    users.id = $1 AND users.provider = 'local'
    AND (users.tokens_valid_after IS NULL OR users.tokens_valid_after <= $2)
"""
_TASK_COLUMNS = """
    tasks.id, tasks.user_id, title, description, completed, completed_at, priority, due_date,
    tasks.created_at, tasks.updated_at, tags, position, version
"""
_LIST_SQL = f"""
    SELECT users.revision AS user_revision, users.task_count AS total, page.*
    FROM users LEFT JOIN LATERAL (
        SELECT {_TASK_COLUMNS} FROM tasks
        WHERE tasks.user_id = users.id AND deleted_at IS NULL
        ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4
    ) AS page ON true
    WHERE {_OWNER}
"""  # noqa: S608 (built from the constants above only)
_GET_SQL = f"""
    SELECT users.id AS owner, {_TASK_COLUMNS}
    FROM users LEFT JOIN tasks
        ON tasks.user_id = users.id AND tasks.id = $3 AND tasks.deleted_at IS NULL
    WHERE {_OWNER}
"""  # noqa: S608 (built from the constants above only)
_BUMP_SQL = f"""
    UPDATE users SET revision = revision + 1 WHERE {_OWNER}
    RETURNING revision,
        (SELECT min(position) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL) AS first
"""  # noqa: S608 (built from the constants above only)
_INSERT_SQL = """
    INSERT INTO tasks (id, user_id, title, description, completed, completed_at, priority,
                       due_date, created_at, updated_at, title_folded, description_folded,
                       version, revision, position)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $14)
"""
_TOGGLE_SQL = f"""
    WITH bumped AS (
        UPDATE users SET revision = revision + 1 WHERE {_OWNER} RETURNING id, revision
    )
    UPDATE tasks SET completed = NOT completed,
                     completed_at = CASE WHEN completed THEN NULL ELSE $4::timestamptz END,
                     updated_at = $4, version = version + 1, revision = bumped.revision
    FROM bumped
    WHERE tasks.user_id = bumped.id AND tasks.id = $3 AND deleted_at IS NULL
    RETURNING {_TASK_COLUMNS}
"""  # noqa: S608 (built from the constants above only)
# Whether the owner's row passes (to tell a revoked token, 401, from a missing task, 404).
_OWNER_SQL = f"SELECT 1 FROM users WHERE {_OWNER}"  # noqa: S608 (constants only)
_WRITABLE = frozenset({"title", "description", "completed", "priority", "due_date"})


class Floor:
    """One worker's state: the verification key and the connection pool."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.dsn = environ["FLOOR_DATABASE_URL"]
        key = serialization.load_pem_public_key(environ["FLOOR_JWT_PUBLIC_KEY"].encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("FLOOR_JWT_PUBLIC_KEY must be an Ed25519 public key")
        self.public_key = key
        self.issuer = environ.get("FLOOR_JWT_ISSUER", "todo-api")
        self.audience = environ.get("FLOOR_JWT_AUDIENCE", "todo-api")
        self.pool_size = int(environ.get("FLOOR_POOL_SIZE", "15"))
        self.pool: Any = None

    def subject(self, request: Request) -> tuple[str, datetime] | None:
        """The subject of a valid bearer token and the instant it was issued (to the
        microsecond below, as the revocation instant is stored), or None."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["EdDSA"],
                audience=self.audience,
                issuer=self.issuer,
                leeway=10,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.InvalidTokenError:
            return None
        subject, issued_at = claims.get("sub"), claims.get("iat")
        if claims.get("typ") != "access" or not isinstance(subject, str):
            return None
        if not isinstance(issued_at, int | float):
            return None
        return subject, _EPOCH + timedelta(microseconds=math.floor(issued_at * 1_000_000))


def _json(
    content: object, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(content), status_code=status_code, media_type="application/json",
        headers=headers,
    )  # fmt: skip


def _problem(status_code: int, code: str) -> Response:
    return Response(
        orjson.dumps({"status": status_code, "code": code}),
        status_code=status_code,
        media_type="application/problem+json",
    )


def _timestamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


def _task(row: Mapping[str, Any]) -> dict[str, Any]:
    due_date: date | None = row["due_date"]
    return {
        "id": str(row["id"]),
        "user_id": row["user_id"],
        "title": row["title"],
        "description": row["description"],
        "completed": row["completed"],
        "completed_at": _timestamp(row["completed_at"]),
        "priority": _PRIORITY_NAMES[row["priority"]],
        "due_date": None if due_date is None else due_date.isoformat(),
        "created_at": _timestamp(row["created_at"]),
        "updated_at": _timestamp(row["updated_at"]),
        "tags": orjson.loads(row["tags"]),
        "position": row["position"],
        "version": row["version"],
    }


def _etag(task: Mapping[str, Any]) -> dict[str, str]:
    return {"ETag": f'"{task["version"]}"'}


def _list_etag(revision: int, limit: int, offset: int) -> str:
    """The service's weak ETag of the default list's page (`task_pages.ListRequest`)."""
    digest = hashlib.sha256(orjson.dumps([{}, limit, offset, None, None])).hexdigest()[:16]
    return f'W/"{revision}.{digest}"'


def _next_cursor(last: Mapping[str, Any], limit: int, passed: int) -> str:
    """The service's cursor of the default list's page after `last` (`backend/services/
    cursors.py`, `task_pages.ListRequest.cursor`)."""
    fields = {
        "v": 1,
        "k": "tasks",
        "f": {},
        "l": limit,
        "o": passed,
        "a": last["created_at"].isoformat(),
        "i": last["id"].hex,
    }
    return base64.urlsafe_b64encode(orjson.dumps(fields)).rstrip(b"=").decode("ascii")


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _floor(request: Request) -> Floor:
    floor: Floor = request.app.state.floor
    return floor


Owner = tuple[str, datetime]  # the path's owner, and when its token was issued


def _owner(request: Request, floor: Floor) -> tuple[Owner | None, Response | None]:
    principal = floor.subject(request)
    if principal is None:
        return None, _problem(401, "invalid_token")
    if request.path_params["user_id"] != principal[0]:
        return None, _problem(403, "forbidden")
    return principal, None


def _task_id(request: Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(request.path_params["task_id"])
    except ValueError:
        return None


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if low <= value <= high else None


async def list_tasks(request: Request) -> Response:
    floor = _floor(request)
    owner, refusal = _owner(request, floor)
    if owner is None:
        assert refusal is not None
        return refusal
    limit = _query_int(request, "limit", 20, 1, 100)
    offset = _query_int(request, "offset", 0, 0, 1_000_000)
    if limit is None or offset is None:
        return _problem(400, "validation_error")
    async with floor.pool.acquire() as connection:
        rows = await connection.fetch(_LIST_SQL, *owner, limit + 1, offset)
    if not rows:
        return _problem(401, "invalid_token")
    revision, total = rows[0]["user_revision"], rows[0]["total"]
    rows = [row for row in rows if row["id"] is not None]
    items = [_task(row) for row in rows[:limit]]
    next_cursor = (
        _next_cursor(rows[limit - 1], limit, offset + limit) if len(rows) > limit else None
    )
    page = {
        "items": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_cursor": next_cursor,
    }
    return _json(page, headers={"ETag": _list_etag(revision, limit, offset)})


async def get_task(request: Request) -> Response:
    floor = _floor(request)
    owner, refusal = _owner(request, floor)
    if owner is None:
        assert refusal is not None
        return refusal
    task_id = _task_id(request)
    if task_id is None:
        return _problem(400, "validation_error")
    async with floor.pool.acquire() as connection:
        row = await connection.fetchrow(_GET_SQL, *owner, task_id)
    if row is None:
        return _problem(401, "invalid_token")
    if row["id"] is None:
        return _problem(404, "not_found")
    return _json(_task(row), headers=_etag(row))


def _task_values(body: object) -> dict[str, Any] | None:
    """The writable fields of a task body, checked as the service checks them, or None."""
    if not isinstance(body, dict) or not body.keys() <= _WRITABLE:
        return None
    title = body.get("title")
    description = body.get("description")
    completed = body.get("completed", False)
    priority = _PRIORITY_RANKS.get(body.get("priority", "medium"))
    due_date = body.get("due_date")
    if not isinstance(title, str) or not 1 <= len(title := title.strip()) <= 200:
        return None
    if description is not None and (not isinstance(description, str) or len(description) > 2000):
        return None
    if not isinstance(completed, bool) or priority is None:
        return None
    if due_date is not None:
        try:
            due_date = date.fromisoformat(due_date) if len(due_date) == 10 else None
        except (TypeError, ValueError):
            return None
        if due_date is None:
            return None
    return {
        "title": title,
        "description": description,
        "completed": completed,
        "priority": priority,
        "due_date": due_date,
    }


async def create_task(request: Request) -> Response:
    floor = _floor(request)
    owner, refusal = _owner(request, floor)
    if owner is None:
        assert refusal is not None
        return refusal
    try:
        values = _task_values(orjson.loads(await request.body()))
    except orjson.JSONDecodeError:
        values = None
    if values is None:
        return _problem(400, "validation_error")
    now = _now()
    task = {
        "id": uuid.uuid4(),
        "user_id": owner[0],
        **values,
        "completed_at": now if values["completed"] else None,
        "created_at": now,
        "updated_at": now,
        "tags": "[]",
        "version": 1,
    }
    async with floor.pool.acquire() as connection, connection.transaction():
        bumped = await connection.fetchrow(_BUMP_SQL, *owner)
        if bumped is None:
            return _problem(401, "invalid_token")
        revision = bumped["revision"]
        # New tasks go first: the key before the user's first (the service's own function).
        task["position"] = key_between(None, bumped["first"])
        await connection.execute(
            _INSERT_SQL, task["id"], owner[0], task["title"], task["description"],
            task["completed"], task["completed_at"], task["priority"], task["due_date"], now, now,
            task["title"].casefold(), task["description"] and task["description"].casefold(),
            revision, task["position"],
        )  # fmt: skip
    location = f"/api/{owner[0]}/tasks/{task['id']}"
    return _json(_task(task), status_code=201, headers={"Location": location, **_etag(task)})


async def toggle_task(request: Request) -> Response:
    floor = _floor(request)
    owner, refusal = _owner(request, floor)
    if owner is None:
        assert refusal is not None
        return refusal
    task_id = _task_id(request)
    if task_id is None:
        return _problem(400, "validation_error")
    async with floor.pool.acquire() as connection:
        row = await connection.fetchrow(_TOGGLE_SQL, *owner, task_id, _now())
        if row is None:  # no such task, or the token is revoked: which one (a rare path)
            passes = await connection.fetchval(_OWNER_SQL, *owner)
            return _problem(404, "not_found") if passes else _problem(401, "invalid_token")
    return _json(_task(row), headers=_etag(row))


async def health(_request: Request) -> Response:
    return _json({"status": "ok"})


def create_app() -> Starlette:
    floor = Floor(os.environ)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        floor.pool = await asyncpg.create_pool(
            floor.dsn, min_size=floor.pool_size, max_size=floor.pool_size
        )
        app.state.floor = floor
        try:
            yield
        finally:
            await floor.pool.close()

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/api/{user_id}/tasks", list_tasks, methods=["GET"]),
            Route("/api/{user_id}/tasks", create_task, methods=["POST"]),
            Route("/api/{user_id}/tasks/{task_id}", get_task, methods=["GET"]),
            Route("/api/{user_id}/tasks/{task_id}/complete", toggle_task, methods=["PATCH"]),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="The benchmark's floor app.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(
        "floor:create_app",
        factory=True,
        app_dir=str(Path(__file__).resolve().parent),
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
