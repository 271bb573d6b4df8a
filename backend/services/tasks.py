"""Tasks: get, create, change (replace, patch, complete), and the trash (delete, restore, clear
completed, purge). The pages of the list and of the trash are `task_pages.py`'s.

The statements are built once, in `task_statements.py` (`q`). Every one is scoped by its owner,
binding the `owner_id` parameter that every execution here supplies (`_run`, `_rows`), so a
task id alone never reaches a row; another user's task and a missing task are
indistinguishable. They run on the request's unit of work (`backend/db/unit.py`:
compiled once and run on the driver directly where they may); rows become response models
through pydantic's validator, faster than constructing them in Python.

Every write to a task stamps it with the owner's next revision in the same transaction, and
keeps its `version` (its ETag) and the owner's live-task counter; a write that changes nothing
keeps the task as it was. On PostgreSQL a change that writes no tags is one statement (no
transaction around it: `unit.statement()`); elsewhere, a create (which reads where the first
task is: new tasks go first), a write of tags (which writes their rows, `tags.py`) and the
trash, a transaction. Moves are `moves.py`'s.

`if_match` is what an `If-Match` header lists: the versions, comma-separated ("3,5"), or None
for no condition. The condition is part of the write's own statement, so nothing can change
the task between the check and the write.
"""

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import Executable

from backend.db import Database, UnitOfWork, Work
from backend.errors import NotFound, PreconditionFailed, TaskExists, TooManyTasks
from backend.models import utcnow
from backend.schemas import TaskCreate, TaskPatch, TaskRead, TaskWrite
from backend.services import moves, tags
from backend.services import task_statements as q

# The trash is purged of what expired, for its owner, at every this-many-th deletion in a
# process (and fully by `todo-api purge`).
PURGE_EVERY = 50
_deletions = itertools.count(1)


async def _run(work: Work, statement: Executable, owner_id: str, **params: Any) -> int:
    """Run a statement for its effect; the number of rows it touched."""
    return await work.run(statement, {"owner_id": owner_id, **params})


async def _rows(
    work: Work, statement: Executable, owner_id: str, **params: Any
) -> list[dict[str, Any]]:
    """Run a statement for its rows."""
    return await work.rows(statement, {"owner_id": owner_id, **params})


def _read(row: dict[str, Any]) -> TaskRead:
    return TaskRead.model_validate(row)


# --- reads ----------------------------------------------------------------------------------


async def _current(unit: UnitOfWork, owner_id: str, task_id: uuid.UUID) -> TaskRead | None:
    rows = await _rows(await unit.read(), q.GET, owner_id, task_id=task_id, **unit.standing)
    return _read(rows[0]) if rows else None


async def get_task(unit: UnitOfWork, owner_id: str, task_id: uuid.UUID) -> TaskRead:
    task = await _current(unit, owner_id, task_id)
    if task is None:
        raise NotFound("No task with this id.")
    return task


async def _refused(
    unit: UnitOfWork, owner_id: str, task_id: uuid.UUID, if_match: str | None
) -> TaskRead | None:
    """Why a conditional write touched no task: 412 with the task as it is when it exists
    (its version was not listed), else None (the task is not there)."""
    current = await _current(unit, owner_id, task_id)
    if current is not None and if_match is not None:
        raise PreconditionFailed(current)
    return current


# --- writes ---------------------------------------------------------------------------------


@asynccontextmanager
async def _one_write(unit: UnitOfWork) -> AsyncIterator[Work]:
    """Where a stamped write runs: PostgreSQL's is one statement (it bumps the revision in a
    WITH clause); SQLite's, `BUMP` then the write, in a transaction."""
    if unit.dialect == "postgresql":
        async with unit.statement() as work:
            yield work
    else:
        async with unit.transaction() as work:
            yield work


async def _stamped(
    work: Work, write: q.Stamped, owner_id: str, standing: dict[str, Any], **params: Any
) -> list[dict[str, Any]]:
    """A stamped write; nothing when the owner's row did not pass (`standing`)."""
    if work.dialect == "postgresql":
        return await _rows(work, write.postgresql, owner_id, **standing, **params)
    bumped = await _rows(work, q.BUMP, owner_id, **standing)
    if not bumped:
        return []
    return await _rows(work, write.sqlite, owner_id, revision=bumped[0]["revision"], **params)


async def create_task(
    unit: UnitOfWork,
    owner_id: str,
    data: TaskCreate,
    *,
    max_tasks: int,
    max_position_length: int,
) -> TaskRead:
    """Create a task, first in the owner's order, with the client's id if it chose one (409
    when any task, live or in the trash, has it), unless the owner holds `max_tasks` live tasks
    already."""
    now = utcnow()
    writable = data.model_dump(include=set(q.WRITABLE))
    values = {
        "id": data.id or uuid.uuid4(),
        **writable,
        **q.folded(writable),
        "completed_at": now if data.completed else None,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    try:
        async with unit.transaction() as work:
            counted = await _rows(work, q.COUNT_ONE_MORE, owner_id, cap=max_tasks, **unit.standing)
            if not counted:
                raise TooManyTasks(
                    f"An account can hold at most {max_tasks} tasks; delete some first."
                )
            revision, first = counted[0]["revision"], counted[0]["first"]
            values["position"] = await moves.first_position(
                work, owner_id, revision, max_position_length, first
            )
            await work.run(
                q.INSERT, {"user_id": owner_id, "revision": revision, "deleted_at": None, **values}
            )
            await tags.remember(work, owner_id, values["id"], data.tags)
    except sa_exc.IntegrityError as exc:
        if data.id is None:
            raise
        raise TaskExists() from exc
    return TaskRead.model_validate({"user_id": owner_id, **values})


async def _change(
    unit: UnitOfWork,
    owner_id: str,
    task_id: uuid.UUID,
    values: dict[str, Any],
    if_match: str | None,
) -> TaskRead:
    """Write `values` (some writable fields) in one UPDATE ... RETURNING: a write that changes
    nothing leaves the task as it was; `completed_at` is kept while the task stays completed,
    set when it becomes completed, cleared when it is reopened."""
    new = dict.fromkeys((*q.WRITABLE, *q.FOLDED)) | values | q.folded(values)
    tagged = "tags" in values
    async with unit.transaction() if tagged else _one_write(unit) as work:
        rows = await _stamped(
            work,
            q.UPDATE,
            owner_id,
            unit.standing,
            task_id=task_id,
            versions=if_match,
            now=utcnow(),
            **{f"set_{name}": name in values for name in q.WRITABLE},
            **{f"new_{name}": value for name, value in new.items()},
        )
        if rows and tagged:
            await tags.replace(work, owner_id, task_id, values["tags"])
    if rows:
        return _read(rows[0])
    await _refused(unit, owner_id, task_id, if_match)
    raise NotFound("No task with this id.")


async def replace_task(
    unit: UnitOfWork,
    owner_id: str,
    task_id: uuid.UUID,
    data: TaskWrite,
    *,
    if_match: str | None = None,
) -> TaskRead:
    """Replace every writable field."""
    values = data.model_dump(include=set(q.WRITABLE))
    return await _change(unit, owner_id, task_id, values, if_match)


async def patch_task(
    unit: UnitOfWork,
    owner_id: str,
    task_id: uuid.UUID,
    patch: TaskPatch,
    *,
    if_match: str | None = None,
) -> TaskRead:
    """Write the fields the patch has, keep the others (JSON merge patch)."""
    values = patch.model_dump(include=patch.model_fields_set)
    return await _change(unit, owner_id, task_id, values, if_match)


async def set_completed(
    unit: UnitOfWork,
    owner_id: str,
    task_id: uuid.UUID,
    completed: bool | None,
    *,
    if_match: str | None = None,
) -> TaskRead:
    """Toggle (`completed` None) or set the completed state. Setting the state the task has
    already changes nothing, and answers the task as it is."""
    if completed is not None:
        return await _change(unit, owner_id, task_id, {"completed": completed}, if_match)
    async with _one_write(unit) as work:
        rows = await _stamped(
            work,
            q.TOGGLE,
            owner_id,
            unit.standing,
            task_id=task_id,
            versions=if_match,
            now=utcnow(),
        )
    if rows:
        return _read(rows[0])
    await _refused(unit, owner_id, task_id, if_match)
    raise NotFound("No task with this id.")


# --- the trash ------------------------------------------------------------------------------


async def delete_task(
    unit: UnitOfWork,
    owner_id: str,
    task_id: uuid.UUID,
    *,
    if_match: str | None = None,
    retention: timedelta,
    trash_cap: int,
) -> None:
    """Move the task to the trash. Deleting a task that is not there is not an error (the
    trash included); with `if_match`, a task whose version is not listed is 412."""
    async with unit.transaction() as work:
        moved = await _stamped(
            work, q.TRASH, owner_id, unit.standing, task_id=task_id, versions=if_match, now=utcnow()
        )
        if moved:
            await _run(work, q.COUNT_FEWER, owner_id, fewer=1)
            await tags.forget(work, owner_id, task_id)
    if not moved and if_match is not None:
        await _refused(unit, owner_id, task_id, if_match)
    elif moved and next(_deletions) % PURGE_EVERY == 0:
        await purge_expired(unit, owner_id, retention=retention, trash_cap=trash_cap)


async def clear_completed(
    unit: UnitOfWork, owner_id: str, *, retention: timedelta, trash_cap: int
) -> int:
    """Move every completed task to the trash, as one change; how many."""
    now = utcnow()
    async with unit.transaction() as work:
        revision = (await _rows(work, q.BUMP, owner_id))[0]["revision"]
        await tags.forget_completed(work, owner_id)
        moved = await _run(work, q.TRASH_COMPLETED, owner_id, revision=revision, now=now)
        if moved:
            await _run(work, q.COUNT_FEWER, owner_id, fewer=moved)
    if moved:
        await purge_expired(unit, owner_id, retention=retention, trash_cap=trash_cap)
    return moved


async def restore_task(
    unit: UnitOfWork, owner_id: str, task_id: uuid.UUID, *, max_tasks: int
) -> TaskRead:
    """Bring a task back from the trash (404 when it is not there, 409 at the task cap)."""
    async with unit.transaction() as work:
        counted = await _rows(work, q.COUNT_RESTORED, owner_id, cap=max_tasks)
        if not counted:
            if await _rows(work, q.IN_TRASH, owner_id, task_id=task_id):
                raise TooManyTasks(
                    f"An account can hold at most {max_tasks} tasks; delete some first."
                )
            raise NotFound("No task with this id in the trash.")
        rows = await _rows(
            work, q.RESTORE, owner_id, task_id=task_id, revision=counted[0]["revision"]
        )
        if not rows:
            raise NotFound("No task with this id in the trash.")  # the count is rolled back
        await tags.remember(work, owner_id, task_id, rows[0]["tags"])
    return _read(rows[0])


async def _forget(work: Work, owner_id: str, purged: list[dict[str, Any]]) -> int:
    """Move the owner's sync horizon past the deletions just purged."""
    if purged:
        horizon = max(row["revision"] for row in purged)
        await _run(work, q.MOVE_HORIZON, owner_id, horizon=horizon)
    return len(purged)


async def purge_task(unit: UnitOfWork, owner_id: str, task_id: uuid.UUID) -> None:
    """Delete a task of the trash for good (nothing when it is not there)."""
    async with unit.transaction() as work:
        await _forget(work, owner_id, await _rows(work, q.PURGE_ONE, owner_id, task_id=task_id))


async def empty_trash(unit: UnitOfWork, owner_id: str) -> int:
    async with unit.transaction() as work:
        return await _forget(work, owner_id, await _rows(work, q.PURGE_ALL, owner_id))


async def purge_expired(
    unit: UnitOfWork,
    owner_id: str,
    *,
    retention: timedelta,
    trash_cap: int,
    now: datetime | None = None,
) -> int:
    """Purge the owner's trash of the tasks deleted longer than `retention` ago and of the
    oldest deletions beyond `trash_cap`; how many."""
    cutoff = (now or utcnow()) - retention
    async with unit.transaction() as work:
        purged = await _rows(work, q.PURGE_EXPIRED, owner_id, cutoff=cutoff, cap=trash_cap)
        return await _forget(work, owner_id, purged)


async def purge_every_expired(database: Database, *, retention: timedelta, trash_cap: int) -> int:
    """`purge_expired` for every user whose trash needs it (`todo-api purge`), one user per
    transaction; how many tasks."""
    cutoff = utcnow() - retention
    async with database.reading() as work:
        owners = await work.rows(q.OWNERS_TO_PURGE, {"cutoff": cutoff, "cap": trash_cap})
    purged = 0
    for row in owners:
        async with database.unit(write=True) as unit:
            purged += await purge_expired(
                unit, row["user_id"], retention=retention, trash_cap=trash_cap
            )
    return purged
