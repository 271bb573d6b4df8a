"""Benchmark data: users who can really log in, their tasks, their tokens, bulk-loaded.

The users get one real Argon2id hash, computed once by the service's own hasher (they share a
password), so `POST /api/auth/login` does the full work for them. Tasks are inserted in bulk
straight into the database (COPY on PostgreSQL, executemany on SQLite), in the formats the
service's column types store: priority as its rank 1..3, timestamps in UTC to the millisecond,
and on SQLite task ids as 32 hex digits and timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff'.
`users.task_count` equals each user's number of tasks, as the service keeps it (the database's
triggers count the completed ones into `users.completed_count` as the tasks go in); every task
has version 1 and a revision, a user's tasks numbered 1, 2, ... in the order they last changed
(`updated_at`, then id), and `users.revision` is the last of them (as migration 0007 numbers
existing tasks, and as the service would have stamped them); nothing is in the trash. A task has
up to two tags (`TAGS`), in its `tags` column and in `task_tags`.

Beside the users that the routes rotate over, one more user holds `DEEP_TASKS` tasks: the deep
reads (`changes`, `cursor_deep`, `offset_deep`) go to that user only, with a feed cursor taken
before its last `CHANGES_BEHIND` changes and a list cursor after its first 9,980 tasks
(`depth`), both made by the service's own code.

Access tokens are minted with the service's own issuer and a signing key that the runner gives
the service (JWT_PRIVATE_KEY), so no login is needed to get them.
"""

import asyncio
import random
import sqlite3
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backend.auth.keys import LocalKeys
from backend.auth.passwords import PasswordHasher
from backend.auth.tokens import AccessTokenIssuer
from backend.schemas import TaskListQuery
from backend.services.changes import Position as FeedPosition
from backend.services.positions import rebalance_width, rebalanced_key
from backend.services.task_pages import ListRequest
from backend.services.task_pages import Position as ListPosition

PASSWORD = "bench-lantern-river-48"  # noqa: S105 (the benchmark accounts' shared password)
SEARCH_TERM = "report"  # occurs in about one title in seven, and in some descriptions
ISSUER = AUDIENCE = "todo-api"  # the service's defaults for JWT_ISSUER and JWT_AUDIENCE
TOKEN_LIFETIME_SECONDS = 6 * 3600  # longer than any run
# Tasks of each user that the get/replace/toggle routes address; delete takes the others.
ADDRESSED_TASKS_PER_USER = 20
# The deep user: how many tasks, and how many changes its feed reader is behind. Its deep pages
# are the last full page of its list (the default one: newest first, 20 a page): 9,980 tasks in.
DEEP_TASKS = 10_000
CHANGES_BEHIND = 100
PAGE = 20
# The tags tasks carry; about one task in seven has the first (`TAG`, what the list shapes filter).
TAGS = ("work", "home", "errands", "finance", "health", "family", "travel")
TAG = TAGS[0]

_VERBS = (
    "Write", "Review", "Send", "Call", "Buy", "Fix", "Plan", "Book", "Clean", "Prepare",
    "Update", "Check", "Organise", "Pay", "Read", "Email", "Schedule", "Finish", "Draft", "Sort",
)  # fmt: skip
_OBJECTS = (
    "quarterly report", "milk and bread", "the plumber", "dentist appointment", "tax return",
    "team meeting notes", "flight to Lisbon", "garage", "birthday present", "weekly report",
    "project proposal", "kitchen sink", "insurance renewal", "budget spreadsheet", "blog post",
    "expense report", "car service", "library books", "newsletter", "holiday photos",
    "status report", "presentation slides", "gym membership", "electricity bill", "recipes",
)  # fmt: skip
_WORDS = (
    "before", "after", "the", "meeting", "Friday", "remember", "ask", "about", "numbers",
    "draft", "final", "version", "with", "Anna", "and", "Tom", "check", "receipts", "send",
    "copy", "to", "office", "urgent", "later", "this", "week", "report", "notes", "list",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SeedTask:
    id: uuid.UUID
    user_id: str
    title: str
    description: str | None
    completed: bool
    completed_at: datetime | None
    priority: int  # the stored rank: 1 low, 2 medium, 3 high
    due_date: date | None
    created_at: datetime
    updated_at: datetime
    revision: int = 0  # the user's revision that the task's last change took (set by _numbered)
    position: str = ""  # the user's order, newest first, as migration 0010 gives (set by _numbered)

    @property
    def tags(self) -> list[str]:
        """None, one or two of `TAGS`, drawn from the task's id (so the rest of the data is what
        it was before tasks had tags)."""
        rng = random.Random(self.id.int)
        return rng.sample(TAGS, k=rng.choices((0, 1, 2), weights=(4, 4, 2))[0])


@dataclass(frozen=True, slots=True)
class SeedUser:
    id: str
    email: str
    name: str
    created_at: datetime
    tasks: tuple[SeedTask, ...]

    @property
    def addressed_task_ids(self) -> list[str]:
        """Newest first: the ids that get, replace and toggle address."""
        newest = sorted(self.tasks, key=lambda task: (task.created_at, task.id), reverse=True)
        return [str(task.id) for task in newest[:ADDRESSED_TASKS_PER_USER]]

    @property
    def doomed_task_ids(self) -> list[str]:
        """The rest: what the delete route deletes (each exists when the route starts)."""
        addressed = set(self.addressed_task_ids)
        return [str(task.id) for task in self.tasks if str(task.id) not in addressed]

    @property
    def completed_count(self) -> int:
        """Its completed tasks: `users.completed_count`, which the database's triggers count as
        the tasks go in (the seed leaves it at 0)."""
        return sum(task.completed for task in self.tasks)

    @property
    def revision(self) -> int:
        """The user's revision: the last change to its tasks."""
        return max((task.revision for task in self.tasks), default=0)

    def changes_cursor(self, behind: int = CHANGES_BEHIND) -> str:
        """A feed cursor (`since`) of a reader that has seen all but the last `behind` changes."""
        seen = [task for task in self.tasks if task.revision <= self.revision - behind]
        last = max(seen, key=lambda task: task.revision)
        return FeedPosition(last.revision, last.id, 0).cursor()

    @property
    def depth(self) -> int:
        """Where the deep pages start: the last full page of the default list."""
        return max(1, len(self.tasks) - PAGE)

    def list_cursor(self) -> str:
        """The `next_cursor` of the default list's page that ends `depth` tasks in (what paging
        there would have given)."""
        newest = sorted(self.tasks, key=lambda task: (task.created_at, task.id), reverse=True)
        last = newest[self.depth - 1]
        position = ListPosition(last.created_at.isoformat(), last.id)
        return ListRequest(TaskListQuery(), PAGE, 0).cursor(position, self.depth)


@dataclass(frozen=True, slots=True)
class Dataset:
    users: tuple[SeedUser, ...]
    password_hash: str
    deep: SeedUser | None = None  # the user of the deep reads

    @property
    def everyone(self) -> tuple[SeedUser, ...]:
        return self.users if self.deep is None else (*self.users, self.deep)

    @property
    def task_count(self) -> int:
        return sum(len(user.tasks) for user in self.everyone)


def _millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _task(rng: random.Random, user_id: str, now: datetime) -> SeedTask:
    created_at = _millis(now - timedelta(seconds=rng.uniform(60, 180 * 86400)))
    age = (now - created_at).total_seconds()
    updated_at = _millis(created_at + timedelta(seconds=rng.uniform(0, age) * rng.random() ** 3))
    completed = rng.random() < 0.3
    completed_at = updated_at if completed else None
    description = None
    if rng.random() < 0.6:
        description = " ".join(rng.choices(_WORDS, k=rng.randint(4, 24))).capitalize() + "."
    due_date = None
    if rng.random() < 0.5:
        due_date = now.date() + timedelta(days=rng.randint(-30, 90))
    return SeedTask(
        id=uuid.UUID(int=rng.getrandbits(128), version=4),
        user_id=user_id,
        title=f"{rng.choice(_VERBS)} {rng.choice(_OBJECTS)}",
        description=description,
        completed=completed,
        completed_at=completed_at,
        priority=rng.choices((1, 2, 3), weights=(3, 5, 2))[0],
        due_date=due_date,
        created_at=created_at,
        updated_at=updated_at,
    )


def _numbered(tasks: list[SeedTask]) -> tuple[SeedTask, ...]:
    """The tasks with their revisions: 1, 2, ... in the order they last changed; and their
    positions, newest first."""
    in_order = sorted(tasks, key=lambda task: (task.updated_at, task.id))
    revisions = {task.id: number for number, task in enumerate(in_order, start=1)}
    newest = sorted(tasks, key=lambda task: (task.created_at, task.id), reverse=True)
    width = rebalance_width(len(tasks))
    positions = {task.id: rebalanced_key(rank, width) for rank, task in enumerate(newest)}
    return tuple(
        replace(task, revision=revisions[task.id], position=positions[task.id]) for task in tasks
    )


def _user(rng: random.Random, index: int, count: int, now: datetime) -> SeedUser:
    user_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return SeedUser(
        id=user_id,
        email=f"bench-{index:03d}@example.com",
        name=f"Bench User {index}",
        created_at=_millis(now - timedelta(days=200)),
        tasks=_numbered([_task(rng, user_id, now) for _ in range(count)]),
    )


def generate(
    *, users: int, tasks: int, password_hash: str, deep_tasks: int = DEEP_TASKS, seed: int = 8
) -> Dataset:
    """`users` accounts sharing `tasks` tasks evenly, and one more with `deep_tasks` tasks (none
    when 0), the same for a given seed."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    people = [
        _user(rng, index, tasks // users + (1 if index < tasks % users else 0), now)
        for index in range(users)
    ]
    deep = _user(rng, users, deep_tasks, now) if deep_tasks else None  # after: same users
    return Dataset(users=tuple(people), password_hash=password_hash, deep=deep)


def hash_password(password: str = PASSWORD) -> str:
    """One Argon2id hash by the service's own hasher, with its parameters."""

    async def compute() -> str:
        hasher = PasswordHasher(concurrency=1)
        try:
            return await hasher.hash(password, account="bench")
        finally:
            hasher.close()

    return asyncio.run(compute())


def mint_tokens(private_key_pem: str, user_ids: list[str]) -> dict[str, str]:
    """Access tokens for these users, signed as the service signs them."""
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    issuer = AccessTokenIssuer(
        LocalKeys(key), issuer=ISSUER, audience=AUDIENCE, lifetime_seconds=TOKEN_LIFETIME_SECONDS
    )
    return {user_id: issuer.issue(user_id).token for user_id in user_ids}


def public_key_pem(private_key_pem: str) -> str:
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


# --- PostgreSQL ---------------------------------------------------------------------------------

_USER_COLUMNS = [
    "id", "provider", "email", "name", "password_hash", "task_count", "revision", "created_at",
    "updated_at",
]  # fmt: skip
_TASK_COLUMNS = [
    "id", "user_id", "title", "description", "title_folded", "description_folded", "completed",
    "completed_at", "priority", "due_date", "created_at", "updated_at", "version", "revision",
    "position", "tags",
]  # fmt: skip
_TAG_COLUMNS = ["user_id", "key", "name", "task_id"]


def _folded(task: SeedTask) -> tuple[str, str | None]:
    """The search columns, folded as the service folds them."""
    return task.title.casefold(), task.description and task.description.casefold()


def _user_record(user: SeedUser, password_hash: str) -> tuple[Any, ...]:
    return (
        user.id, "local", user.email, user.name, password_hash, len(user.tasks), user.revision,
        user.created_at, user.created_at,
    )  # fmt: skip


def _task_record(task: SeedTask) -> tuple[Any, ...]:
    return (
        task.id, task.user_id, task.title, task.description, *_folded(task), task.completed,
        task.completed_at, task.priority, task.due_date, task.created_at, task.updated_at, 1,
        task.revision, task.position, orjson.dumps(task.tags).decode(),
    )  # fmt: skip


def _tag_records(dataset: "Dataset") -> list[tuple[Any, ...]]:
    """The `task_tags` rows of every task (tags are lower case: each is its own key)."""
    return [
        (task.user_id, tag, tag, task.id)
        for user in dataset.everyone
        for task in user.tasks
        for tag in task.tags
    ]


async def seed_postgres(dsn: str, dataset: Dataset) -> None:
    """COPY the users and tasks into an empty, migrated database, then VACUUM ANALYZE it (the
    state autovacuum keeps a live database in)."""
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        async with connection.transaction():
            await connection.copy_records_to_table(
                "users",
                records=[_user_record(user, dataset.password_hash) for user in dataset.everyone],
                columns=_USER_COLUMNS,
            )
            await connection.copy_records_to_table(
                "tasks",
                records=[_task_record(task) for user in dataset.everyone for task in user.tasks],
                columns=_TASK_COLUMNS,
            )
            await connection.copy_records_to_table(
                "task_tags", records=_tag_records(dataset), columns=_TAG_COLUMNS
            )
        await connection.execute("VACUUM ANALYZE users, tasks, task_tags")
    finally:
        await connection.close()


# --- SQLite -------------------------------------------------------------------------------------


def _sqlite_timestamp(moment: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DATETIME storage format, in UTC without a zone."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _sqlite_user_row(user: SeedUser, password_hash: str) -> tuple[Any, ...]:
    created_at = _sqlite_timestamp(user.created_at)
    return (
        user.id, "local", user.email, user.name, password_hash, len(user.tasks), user.revision,
        created_at, created_at,
    )  # fmt: skip


def _sqlite_task_row(task: SeedTask) -> tuple[Any, ...]:
    due_date = None if task.due_date is None else task.due_date.isoformat()
    return (
        task.id.hex, task.user_id, task.title, task.description, *_folded(task),
        int(task.completed), _sqlite_timestamp(task.completed_at), task.priority, due_date,
        _sqlite_timestamp(task.created_at), _sqlite_timestamp(task.updated_at), 1, task.revision,
        task.position, orjson.dumps(task.tags).decode(),
    )  # fmt: skip


def _sqlite_insert(table: str, columns: list[str]) -> str:
    """INSERT of these columns (our own names, no input), one parameter each."""
    placeholders = ", ".join("?" * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"  # noqa: S608


def seed_sqlite(path: Path, dataset: Dataset) -> None:
    """Insert the users and tasks into an empty, migrated SQLite database file."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.executemany(
                _sqlite_insert("users", _USER_COLUMNS),
                [_sqlite_user_row(user, dataset.password_hash) for user in dataset.everyone],
            )
            connection.executemany(
                _sqlite_insert("tasks", _TASK_COLUMNS),
                [_sqlite_task_row(task) for user in dataset.everyone for task in user.tasks],
            )
            connection.executemany(
                _sqlite_insert("task_tags", _TAG_COLUMNS),
                [
                    (user, key, name, task_id.hex)
                    for user, key, name, task_id in _tag_records(dataset)
                ],
            )
    finally:
        connection.close()


# --- What wrk's Lua script reads ----------------------------------------------------------------


def _lua_string(value: str) -> str:
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"not a plain ASCII value for the Lua data file: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lua_list(values: list[str]) -> str:
    return "{" + ", ".join(_lua_string(value) for value in values) + "}"


def write_lua_data(path: Path, dataset: Dataset, tokens: dict[str, str]) -> None:
    """The users, their tokens and task ids as a Lua chunk that `requests.lua` loads with
    dofile(): one table per user, in a fixed shuffled order so that consecutive requests of a
    thread go to different users."""
    order = list(dataset.users)
    random.Random(1).shuffle(order)
    lines = [
        "-- Generated by bench/run.py: the benchmark's users, tokens and task ids.",
        "return {",
        f"  password = {_lua_string(PASSWORD)},",
        f"  search = {_lua_string(SEARCH_TERM)},",
        "  users = {",
    ]
    lines.extend(
        f"    {{id = {_lua_string(user.id)}, email = {_lua_string(user.email)}, "
        f"token = {_lua_string(tokens[user.id])}, tasks = {_lua_list(user.addressed_task_ids)}, "
        f"doomed = {_lua_list(user.doomed_task_ids)}}},"
        for user in order
    )
    lines.append("  },")
    if dataset.deep is not None:
        deep = dataset.deep
        lines.append(
            f"  deep = {{id = {_lua_string(deep.id)}, token = {_lua_string(tokens[deep.id])}, "
            f"since = {_lua_string(deep.changes_cursor())}, "
            f"cursor = {_lua_string(deep.list_cursor())}, depth = {deep.depth}}},"
        )
    lines += ["}", ""]
    path.write_text("\n".join(lines), encoding="ascii")
