"""The `todo-api` console command: serve, migrate, export the OpenAPI document, generate a key."""

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import uvicorn
from alembic import util as alembic_util
from fastapi import FastAPI

from backend.auth.keys import LocalKeys, generate_private_key_pem
from backend.config import Settings, SettingsError, get_settings
from backend.database_url import masked_url
from backend.db import Database
from backend.db.errors import (
    describe_database_error,
    is_database_unusable,
    is_outage,
)
from backend.logs import configure_logging
from backend.main import create_app
from backend.metrics import prepare_directory, release_directory
from backend.migrations import upgrade_to_head
from backend.services import idempotency, sessions, streams, tasks

logger = logging.getLogger("backend.cli")


class CommandFailed(Exception):
    """A command cannot do its job for a reason the operator must fix; the message says how."""


def served_app() -> FastAPI:
    """The app as uvicorn's workers build it: with the process's settings and JSON logs."""
    configure_logging(get_settings())
    return create_app()


async def database_is_migrated(settings: Settings) -> bool:
    database = Database(settings)
    try:
        return await database.migrated()
    finally:
        await database.dispose()


def _check_schema(settings: Settings) -> None:
    """Refuse (in production) or warn loudly about a database whose schema is not this
    version's: every request touching it would fail. A database that does not answer yet is
    no reason to refuse: /ready says 503 until it does."""
    try:
        migrated = asyncio.run(database_is_migrated(settings))
    except Exception as exc:
        if not is_outage(exc):
            raise
        logger.warning(
            "the database does not answer yet (%s); /ready says 503 until it does",
            describe_database_error(exc),
        )
        return
    if migrated:
        return
    problem = (
        f"the database in DATABASE_URL ({masked_url(settings.database_url)}) is not migrated "
        "to this version's schema; run `todo-api migrate` (or ./dev migrate)"
    )
    if settings.environment == "production":
        raise CommandFailed(problem)
    logger.warning("NOT MIGRATED: %s; until then /ready and most requests answer 503", problem)


def _serve(args: argparse.Namespace) -> None:
    settings = get_settings()
    configure_logging(settings)
    LocalKeys.from_settings(settings)  # a key that does not parse: refused here, not per worker
    if settings.is_sqlite or args.migrate:
        upgrade_to_head(settings.database_url)
    _check_schema(settings)
    if settings.is_sqlite and args.workers > 1:
        logger.warning(
            "SQLite serialises writes: %d workers take turns on one write lock, with long waits "
            "under load; one worker (or PostgreSQL) serves writes better",
            args.workers,
        )
    # Several workers keep their metrics in files that any of them reads for a scrape.
    metrics_directory = (
        prepare_directory(workers=args.workers) if settings.metrics_token is not None else None
    )
    try:
        _run_uvicorn(args)
    finally:
        release_directory(metrics_directory)


def _run_uvicorn(args: argparse.Namespace) -> None:
    uvicorn.run(
        "backend.cli:served_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        server_header=False,
        # The app itself decides which proxies to trust (TRUSTED_PROXIES), for rate limits.
        proxy_headers=False,
        timeout_keep_alive=args.keep_alive,
        timeout_graceful_shutdown=30,
    )


def _migrate(_args: argparse.Namespace) -> None:
    settings = get_settings()
    configure_logging(settings)
    upgrade_to_head(settings.database_url)


def openapi_document() -> str:
    return json.dumps(create_app().openapi(), indent=2, ensure_ascii=False) + "\n"


def _openapi(args: argparse.Namespace) -> None:
    document = openapi_document()
    if args.output == "-":
        sys.stdout.write(document)
    else:
        Path(args.output).write_text(document, encoding="utf-8")


async def _purge_sessions(database: Database, _settings: Settings) -> int:
    async with database.session(write=True) as session:
        return await sessions.purge_expired(session)


async def _purge_trash(database: Database, settings: Settings) -> int:
    return await tasks.purge_every_expired(
        database,
        retention=timedelta(days=settings.trash_retention_days),
        trash_cap=settings.max_tasks_per_user,
    )


async def _purge_idempotency_keys(database: Database, _settings: Settings) -> int:
    async with database.unit(write=False) as unit:
        return await idempotency.purge_expired(unit)


async def _purge_stream_leases(database: Database, _settings: Settings) -> int:
    return await streams.purge_lapsed_streams(database)


# What `todo-api purge` deletes, each also purged now and then by the service itself: a
# description of what it counts, and the function that purges it and returns how many.
PURGES: tuple[tuple[str, Callable[[Database, Settings], Awaitable[int]]], ...] = (
    ("expired refresh token(s)", _purge_sessions),
    ("task(s) past the trash's retention", _purge_trash),
    ("expired idempotency record(s)", _purge_idempotency_keys),
    ("lapsed live-update stream lease(s)", _purge_stream_leases),
)


async def purge(settings: Settings) -> dict[str, int]:
    """Delete what has expired everywhere; how many of each."""
    database = Database(settings)
    try:
        return {what: await purge_one(database, settings) for what, purge_one in PURGES}
    finally:
        await database.dispose()


def _purge(_args: argparse.Namespace) -> None:
    settings = get_settings()
    configure_logging(settings)
    for what, count in asyncio.run(purge(settings)).items():
        print(f"deleted {count} {what}")


def _genkey(_args: argparse.Namespace) -> None:
    sys.stdout.write(generate_private_key_pem())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="todo-api", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the API (migrates the SQLite database first)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument(
        "--migrate", action="store_true", help="also migrate a PostgreSQL database first"
    )
    serve.add_argument("--keep-alive", type=int, default=5, help="idle keep-alive seconds")
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="upgrade the database to the newest schema")
    migrate.set_defaults(handler=_migrate)

    openapi = commands.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--output", default="openapi.json", help="a file, or - for stdout")
    openapi.set_defaults(handler=_openapi)

    purge_command = commands.add_parser(
        "purge",
        aliases=["purge-sessions"],
        help="delete what has expired: refresh tokens, idempotency records, the trash past its "
        "retention (the service also does it now and then)",
    )
    purge_command.set_defaults(handler=_purge)

    genkey = commands.add_parser("genkey", help="print a new Ed25519 signing key (PEM)")
    genkey.set_defaults(handler=_genkey)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run a command. What an operator must fix (a setting, a database it cannot use, a
    migration) is one line on stderr and exit status 1, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except SettingsError as exc:
        sys.exit("\n".join(f"todo-api: {problem}" for problem in exc.problems))
    except (ValueError, CommandFailed) as exc:  # a signing key that does not parse, …
        sys.exit(f"todo-api: {exc}")
    except alembic_util.CommandError as exc:  # a revision this version does not know
        sys.exit(f"todo-api: migrate: {exc}")
    except Exception as exc:
        if not is_database_unusable(exc):
            raise
        sys.exit(
            f"todo-api: cannot use the database in DATABASE_URL "
            f"({masked_url(get_settings().database_url)}): {describe_database_error(exc)}"
        )


if __name__ == "__main__":
    main()
