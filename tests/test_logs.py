"""The log handler: lines are batched while the event loop runs, and never lost."""

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from backend.logs import BatchingStreamHandler, JsonFormatter


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"test-batching-{id(stream)}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    handler.close()


def messages(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["message"] for line in stream.getvalue().splitlines()]


async def test_lines_are_written_in_a_batch_within_50_ms(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    for number in range(3):
        logger.info("request %d", number)
    assert messages(stream) == []
    await asyncio.sleep(0.1)
    assert messages(stream) == ["request 0", "request 1", "request 2"]


async def test_warnings_are_written_at_once_with_what_came_before(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.info("before")
    logger.warning("trouble")
    assert messages(stream) == ["before", "trouble"]


def test_lines_outside_an_event_loop_are_written_at_once(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.info("starting")
    assert messages(stream) == ["starting"]


def test_a_batch_left_by_a_finished_event_loop_is_written_later(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged

    async def migrate() -> None:
        logger.info("inside a short-lived loop")

    asyncio.run(migrate())  # its loop ends before the scheduled flush can run
    logger.info("after")
    assert messages(stream) == ["inside a short-lived loop", "after"]
