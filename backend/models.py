"""The tables. Request and response shapes live in `schemas/`, never here.

Conventions: timestamps are stored in UTC and always come back timezone-aware; constraint and
index names follow the metadata's naming convention, so migrations can refer to them; every task
index starts with the owner, because every task query is scoped by its owner.
"""

import uuid
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Now, in UTC, to the millisecond: the precision the API shows, so that what a client
    reads back is exactly what is stored."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that is always returned timezone-aware (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Priority(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


_PRIORITY_RANK = {Priority.low: 1, Priority.medium: 2, Priority.high: 3}
_RANK_PRIORITY = {rank: priority for priority, rank in _PRIORITY_RANK.items()}


class PriorityRank(TypeDecorator[Priority]):
    """Priority stored as its rank (1 low, 2 medium, 3 high), so ORDER BY sorts by rank and an
    index serves it."""

    impl = sa.SmallInteger
    cache_ok = True

    def process_bind_param(self, value: Priority | str | None, dialect: Dialect) -> int | None:
        return None if value is None else _PRIORITY_RANK[Priority(value)]

    def process_result_value(self, value: int | None, dialect: Dialect) -> Priority | None:
        return None if value is None else _RANK_PRIORITY[value]


class TagList(TypeDecorator[list[str]]):
    """A task's tags as it shows them (spellings, in order), stored as a JSON array: what reads
    show. Filtering and counting read `task_tags`, which holds them folded and indexed."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> str | None:
        return None if value is None else orjson.dumps(value).decode()

    def process_result_value(self, value: str | None, dialect: Dialect) -> list[str] | None:
        return None if value is None else list(orjson.loads(value))


# A task's place in its owner's order: a fractional index (`backend/services/positions.py`),
# compared byte by byte on every database (PostgreSQL's collation would order it otherwise).
POSITION_TYPE = sa.String(64).with_variant(postgresql.VARCHAR(64, collation="C"), "postgresql")


class AuthProvider(StrEnum):
    local = "local"
    better_auth = "better_auth"


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        # Local accounts have unique emails; Better Auth users are separate accounts even when an
        # email matches, so the constraint covers local rows only.
        sa.Index(
            "uq_users_local_email",
            "email",
            unique=True,
            sqlite_where=sa.text("provider = 'local'"),
            postgresql_where=sa.text("provider = 'local'"),
        ),
    )

    id: str = Field(primary_key=True, max_length=64)
    provider: AuthProvider = Field(sa_type=sa.String(16), nullable=False)
    # Always set for local accounts; a Better Auth token may carry no email claim.
    email: str | None = Field(default=None, max_length=320)
    name: str | None = Field(default=None, max_length=200)
    # An IANA time zone name ("Europe/Paris"): what "today" means for this user.
    time_zone: str = Field(
        default="UTC", max_length=64, nullable=False, sa_column_kwargs={"server_default": "UTC"}
    )
    password_hash: str | None = Field(default=None, max_length=512)
    # Live tasks (the trash is not counted): the cap's counter, and the `total` of a list with no
    # filter.
    task_count: int = Field(default=0, nullable=False)
    # Live completed tasks: the `total` of a list filtered by status alone. Kept by triggers on
    # `tasks` (migration 0011), whatever statement changes a task, never by the services.
    completed_count: int = Field(
        default=0, nullable=False, sa_column_kwargs={"server_default": "0"}
    )
    # The user's revision: the last number a change to the user's tasks took (the changes feed's
    # clock). Every task write takes the next one while it holds this row, so they are handed
    # out, and committed, in order.
    revision: int = Field(
        default=0, sa_type=sa.BigInteger, nullable=False, sa_column_kwargs={"server_default": "0"}
    )
    # Purging the trash forgets deletions: a feed cursor older than this cannot be served (410).
    sync_horizon: int = Field(
        default=0, sa_type=sa.BigInteger, nullable=False, sa_column_kwargs={"server_default": "0"}
    )
    # Access tokens issued before this instant are refused (logout-all, password change).
    tokens_valid_after: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


LIVE = sa.text("deleted_at IS NULL")
TRASHED = sa.text("deleted_at IS NOT NULL")


def _live_index(name: str, *columns: Any) -> sa.Index:
    """An index of the live tasks only: the trash never slows a list down."""
    return sa.Index(name, *columns, sqlite_where=LIVE, postgresql_where=LIVE)


# `Index.info` key: the one dialect an index exists on (the migrations compare the rest).
ONLY_ON = "only_on"


def _search_index(name: str, column: str) -> sa.Index:
    """PostgreSQL: a trigram GIN index of a folded text led by the owner (pg_trgm for the text,
    btree_gin for the owner), of the live tasks, which serves `LIKE '%text%'`. SQLite searches
    through `tasks_search` instead (below)."""
    index = sa.Index(
        name,
        "user_id",
        column,
        postgresql_using="gin",
        postgresql_ops={column: "gin_trgm_ops"},
        postgresql_where=LIVE,
        info={ONLY_ON: "postgresql"},
    )
    return index.ddl_if(dialect="postgresql")


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    __table_args__ = (
        sa.CheckConstraint("priority BETWEEN 1 AND 3", name="priority_rank"),
        _live_index("ix_tasks_user_created", "user_id", "created_at", "id"),
        _live_index("ix_tasks_user_updated", "user_id", "updated_at", "id"),
        _live_index("ix_tasks_user_due", "user_id", "due_date", "id"),
        _live_index("ix_tasks_user_priority", "user_id", "priority", "id"),
        # Title sorts case-insensitively; the index holds the same expression.
        _live_index("ix_tasks_user_title", "user_id", sa.text("lower(title)"), "id"),
        _live_index("ix_tasks_user_completed_created", "user_id", "completed", "created_at", "id"),
        _live_index("ix_tasks_user_position", "user_id", "position", "id"),
        _search_index("ix_tasks_user_title_trgm", "title_folded"),
        _search_index("ix_tasks_user_description_trgm", "description_folded"),
        # The changes feed: a user's tasks (the trash too) in the order they last changed.
        sa.Index("ix_tasks_user_revision", "user_id", "revision", "id"),
        # The trash, latest deletion first; and its purge by age, across users.
        sa.Index(
            "ix_tasks_user_deleted",
            "user_id",
            "deleted_at",
            "id",
            sqlite_where=TRASHED,
            postgresql_where=TRASHED,
        ),
        sa.Index(
            "ix_tasks_deleted_at", "deleted_at", sqlite_where=TRASHED, postgresql_where=TRASHED
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: str = Field(
        sa_column=sa.Column(
            sa.String(64), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        )
    )
    title: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    # What search compares, folded (str.casefold) when written: the same matching on every
    # engine and database locale, which neither ILIKE nor SQLite's lower() gives.
    title_folded: str = Field(nullable=False)
    description_folded: str | None = None
    completed: bool = Field(default=False, nullable=False)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    priority: Priority = Field(default=Priority.medium, sa_type=PriorityRank, nullable=False)
    due_date: date | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    tags: list[str] = Field(
        default_factory=list,
        sa_column=sa.Column(TagList(), nullable=False, server_default="[]"),
    )
    position: str = Field(sa_column=sa.Column(POSITION_TYPE, nullable=False))
    # 1 at creation, + 1 with every change (its ETag); a write that changes nothing keeps it.
    version: int = Field(default=1, nullable=False, sa_column_kwargs={"server_default": "1"})
    # The owner's revision that the task's last change (its deletion and restoring included) took.
    revision: int = Field(
        default=0, sa_type=sa.BigInteger, nullable=False, sa_column_kwargs={"server_default": "0"}
    )
    # Set when the task went to the trash; the row is purged later.
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class TaskTag(SQLModel, table=True):
    """A tag of a live task, folded (`str.casefold`: its `key`), with the spelling the task
    shows: what `tag=` filters and `GET /tags` counts read. The primary key holds every column
    the two read, led by the owner, so both are index-only scans of the owner's own rows. Rows
    exist for live tasks only (a task's rows go when it goes to the trash, and come back with
    it), so neither looks at the tasks. A task has each key once (the request's rules see to
    it). Why a table rather than an array with a GIN index: the README's "Tags"."""

    __tablename__ = "task_tags"
    __table_args__ = (sa.Index("ix_task_tags_task", "task_id"),)

    user_id: str = Field(
        sa_column=sa.Column(
            sa.String(64),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    key: str = Field(max_length=160, primary_key=True)
    name: str = Field(max_length=40, primary_key=True)
    task_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid(), sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
        )
    )


class RefreshToken(SQLModel, table=True):
    """A session (a *family* of refresh tokens that started at one login), with the hash of its
    one current refresh token. Refreshing replaces that hash; a token of the family that is not
    the current one was copied (the family id is part of every token), so the family ends. One
    row per session, however often it is refreshed."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        sa.Index("ix_refresh_tokens_user", "user_id"),
        sa.Index("ix_refresh_tokens_expires", "expires_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: str = Field(
        sa_column=sa.Column(
            sa.String(64), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        )
    )
    family_id: uuid.UUID = Field(unique=True, nullable=False)
    token_hash: str = Field(max_length=64, unique=True, nullable=False)
    # When the current token was issued.
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    # The family's absolute end, and the current token's own end (the sooner of that and the
    # idle limit).
    family_expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class PasswordResetToken(SQLModel, table=True):
    """A password reset link that was mailed: only the SHA-256 of its 256-bit token is stored.
    A user has at most one (a newer request replaces it); using it, a password change and the
    account's deletion delete it."""

    __tablename__ = "password_reset_tokens"
    __table_args__ = (
        sa.Index("ix_password_reset_tokens_user", "user_id"),
        sa.Index("ix_password_reset_tokens_expires", "expires_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: str = Field(
        sa_column=sa.Column(
            sa.String(64), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        )
    )
    token_hash: str = Field(max_length=64, unique=True, nullable=False)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class DeletedSubject(SQLModel, table=True):
    """A Better Auth user deleted here, as the SHA-256 of its subject (no readable id is kept),
    for a day: its tokens issued before the deletion must not provision it again. It has no
    foreign key to `users`: the user row is gone."""

    __tablename__ = "deleted_subjects"
    __table_args__ = (sa.Index("ix_deleted_subjects_deleted_at", "deleted_at"),)

    subject_hash: str = Field(max_length=64, primary_key=True)
    deleted_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class IdempotencyKey(SQLModel, table=True):
    """A request sent with an `Idempotency-Key` (`backend/services/idempotency.py`): the key, the
    fingerprint of the request (SHA-256 of its method, path and body), the claim of the request
    running it (`status` null) and, once it is done, the answer it gave, which a repeat gets
    again until `expires_at`. Bookkeeping of answers, not the user's data: never exported, and
    deleted with the user."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.Index("ix_idempotency_keys_expires_at", "expires_at"),)

    user_id: str = Field(
        sa_column=sa.Column(
            sa.String(64),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    key: str = Field(max_length=255, primary_key=True)
    fingerprint: str = Field(max_length=64, nullable=False)
    # The running request's own claim: only it records the answer or lets the key go, also
    # when a repeat took the key over after the lease.
    claim: uuid.UUID = Field(nullable=False)
    claimed_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    # The answer, exactly as it was sent; `status` is null while the request runs.
    status: int | None = Field(default=None, sa_type=sa.SmallInteger)
    body: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    content_type: str | None = Field(default=None, sa_type=sa.Text)
    location: str | None = Field(default=None, sa_type=sa.Text)
    etag: str | None = Field(default=None, sa_type=sa.Text)


class EventStream(SQLModel, table=True):
    """An open live-update stream (`backend/events.py`): a lease its worker renews while the
    stream is open, so that every worker and machine counts a user's streams against
    `MAX_STREAMS_PER_USER`, and a dead worker's leases lapse by themselves."""

    __tablename__ = "event_streams"
    __table_args__ = (
        sa.Index("ix_event_streams_user_id", "user_id"),
        sa.Index("ix_event_streams_worker", "worker"),
        sa.Index("ix_event_streams_expires_at", "expires_at"),
    )

    id: uuid.UUID = Field(primary_key=True)
    user_id: str = Field(
        sa_column=sa.Column(
            sa.String(64), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        )
    )
    # The worker process serving the stream (a random id of its own, per start).
    worker: uuid.UUID = Field(nullable=False)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


# The tables themselves, for Core statements (no ORM entity bookkeeping) on hot paths.
USERS: sa.Table = User.__table__  # type: ignore[attr-defined]
TASKS: sa.Table = Task.__table__  # type: ignore[attr-defined]
PASSWORD_RESETS: sa.Table = PasswordResetToken.__table__  # type: ignore[attr-defined]
DELETED_SUBJECTS: sa.Table = DeletedSubject.__table__  # type: ignore[attr-defined]
IDEMPOTENCY_KEYS: sa.Table = IdempotencyKey.__table__  # type: ignore[attr-defined]
EVENT_STREAMS: sa.Table = EventStream.__table__  # type: ignore[attr-defined]
TASK_TAGS: sa.Table = TaskTag.__table__  # type: ignore[attr-defined]

# SQLite's search index: an FTS5 table with the trigram tokenizer over the folded texts of
# `tasks`, created by the migrations (a virtual table is no part of the metadata, which only
# describes it for statements). Case-sensitive trigrams, queried with GLOB: the texts are already
# folded, so a GLOB for `*text*` is exactly the substring match LIKE does (and PostgreSQL does).
#
# External content (`content='tasks'`, keyed by the task's rowid): the index holds trigrams
# only, never a third copy of the text, and GLOB checks each candidate against the row of
# `tasks` itself. It indexes every task, the trash too (lists keep only the owner's live tasks
# anyway): that is exactly what FTS5's `rebuild` makes of `tasks`, so its `integrity-check`
# can prove the triggers kept it in step, and `rebuild` can mend it. Triggers keep it: on insert,
# on delete (a purge, or an account's cascade), on a change of the folded texts.
# Whatever gives the tasks new rowids (a migration that copies the table, which also drops its
# triggers) must create the triggers again and `rebuild`.
TASKS_SEARCH = sa.Table(
    "tasks_search",
    sa.MetaData(),
    sa.Column("rowid", sa.Integer, primary_key=True),
    sa.Column("title_folded", sa.Text),
    sa.Column("description_folded", sa.Text),
)
# The rowid of a task (SQLite), which `tasks_search` is keyed by.
TASK_ROWID: sa.ColumnClause[int] = sa.column("rowid", sa.Integer, _selectable=TASKS)
