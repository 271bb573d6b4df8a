"""What a database error means: an outage (answer 503, try again), a transaction that lost a
race (run it again), a database this service cannot use (a setting or a migration to fix), or a
bug (500). The error handlers, /ready and the command line all ask here.

Only SQLAlchemy's errors are database errors: its `DBAPIError`s, which wrap what the driver
raised, and the pool's `TimeoutError`. SQLAlchemy leaves some of asyncpg's failures unwrapped,
though: a connection refused, a TLS upgrade refused or a connect timeout, and a statement
timeout, all raised as the built-in `OSError` (`ConnectionError`, `TimeoutError`…). An `OSError`
may come from anywhere (a file, a mail server, the JWKS URL), so `wrap_driver_os_errors` makes
an engine raise those as SQLAlchemy's `OperationalError`, as it raises its other failures. The
statements run on the driver directly are wrapped by `fastpath.translate_driver_error`.
"""

from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine

_OUTAGE_SQLSTATES = ("08", "53", "57P")
# Class 40 (transaction rollback): a deadlock or a serialization failure. Retried once or twice
# by the route classes, then answered like an outage: nothing was done, try again.
_CONFLICT_SQLSTATES = ("40",)
# The database answers, but this service cannot use it: no such database (3D000), a role or
# password refused (class 28), missing privileges (42501), or a schema that is not migrated
# (42P01 undefined table, 42703 undefined column). A setting or a deployment step to fix.
_UNUSABLE_SQLSTATES = ("28", "3D000", "42501", "42P01", "42703")
_UNMIGRATED_SQLSTATES = ("42P01", "42703")


def _sqlstate(exc: sa_exc.DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", None) or "")


def is_transient_conflict(exc: BaseException) -> bool:
    """Whether a database error means "this transaction lost a race; run it again"."""
    return isinstance(exc, sa_exc.DBAPIError) and _sqlstate(exc).startswith(_CONFLICT_SQLSTATES)


def is_outage(exc: BaseException) -> bool:
    """Whether a database error means "the database is unreachable or overloaded", as opposed
    to a bug in a query.

    The built-in `TimeoutError` counts too: it is what a deadline put around database work
    raises (`asyncio.timeout`, as /ready's), for the caller that put it there. The error
    handlers are installed for SQLAlchemy's errors only, so a `TimeoutError` (or any `OSError`)
    that escapes a request is a 500, whatever raised it.
    """
    if isinstance(exc, sa_exc.TimeoutError | TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        # SQLSTATE classes 08 (connection), 53 (resources) and 57P (shutting down, starting up):
        # asyncpg's "the database system is shutting down" arrives as a plain DBAPIError.
        return (
            exc.connection_invalidated
            or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
            or _sqlstate(exc).startswith(_OUTAGE_SQLSTATES)
            or is_transient_conflict(exc)
        )
    return False


def is_database_unusable(exc: BaseException) -> bool:
    """Whether a database error means "the service cannot use the database now" (an outage, or
    a database that refuses us or lacks our schema), as opposed to a bug in a query."""
    return is_outage(exc) or (
        isinstance(exc, sa_exc.DBAPIError) and _sqlstate(exc).startswith(_UNUSABLE_SQLSTATES)
    )


def describe_database_error(exc: BaseException) -> str:
    """One line saying what went wrong, for logs and the command line: the server's or the
    driver's message, without the SQL or the URL."""
    cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    text = (str(cause).strip().splitlines() or [""])[0]
    if isinstance(exc, sa_exc.DBAPIError) and _sqlstate(exc).startswith(_UNMIGRATED_SQLSTATES):
        text += " (the schema is not migrated: run `todo-api migrate`)"
    return text or type(cause).__name__


def wrap_driver_os_errors(engine: AsyncEngine) -> None:
    """Have `engine` raise the `OSError`s of its driver as SQLAlchemy's `OperationalError`
    (whose `orig` holds the driver's message, and whose cause is the `OSError`), on connecting
    and on running statements alike. Nothing else changes: a connection is invalidated exactly
    when it was before."""
    target = engine.sync_engine
    if event.contains(target, "do_connect", _connect):
        return
    event.listen(target, "do_connect", _connect)
    event.listen(target, "handle_error", _wrap_os_error)


def _connect(
    dialect: Dialect, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
) -> Any:
    # SQLAlchemy wraps only the driver's own (DB-API) errors raised while connecting: raising
    # one here gets this failure wrapped like the others.
    try:
        return dialect.connect(*cargs, **cparams)
    except OSError as exc:
        raise dialect.loaded_dbapi.OperationalError(str(exc) or type(exc).__name__) from exc


def _wrap_os_error(context: ExceptionContext) -> BaseException | None:
    error = context.original_exception
    if context.sqlalchemy_exception is None and isinstance(error, OSError):
        return sa_exc.OperationalError(context.statement, None, error)
    return None
