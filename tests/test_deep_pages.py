"""Pages at a deep offset (`task_lists.DEEP_OFFSET` and beyond) are read by another statement
(the ids from the index first, then the page's rows): they hold exactly the tasks that walking
the same list by cursor gives at that depth, in the same order, on both engines."""

import random
from typing import Any

import httpx

from backend.services.task_lists import DEEP_OFFSET
from tests.conftest import WithSettings

TASKS = DEEP_OFFSET + 45
# Sorts whose keys repeat (priority, completed), sort last when missing (due dates), fold case
# (titles), and the default.
QUERIES: tuple[dict[str, str], ...] = (
    {},
    {"sort": "title"},
    {"sort": "-due_date"},
    {"sort": "due_date", "status": "pending"},
    {"sort": "priority"},
    {"sort": "-updated_at", "priority": "high"},
)


async def _walk(client: httpx.AsyncClient, url: str, query: dict[str, Any]) -> list[str]:
    """Every task id of the list, in order, page after page by cursor."""
    ids: list[str] = []
    params: dict[str, Any] = {**query, "limit": 100}
    while True:
        page = (await client.get(url, params=params)).json()
        ids += [task["id"] for task in page["items"]]
        if page["next_cursor"] is None:
            return ids
        params = {"cursor": page["next_cursor"]}


async def test_deep_offsets_give_the_pages_that_walking_gives(with_settings: WithSettings) -> None:
    rng = random.Random(7)
    async with with_settings(task_write_rate_limit="100000/minute") as (client, user):
        client.headers.update(user.headers)
        for number in range(TASKS):
            body = {
                "title": rng.choice(["alpha", "Beta", "gamma", "ALPHA"]) + f" {number % 7}",
                "priority": rng.choice(["low", "medium", "high"]),
                "completed": rng.random() < 0.3,
                "due_date": rng.choice([None, "2026-12-01", "2026-12-24", "2027-01-05"]),
            }
            assert (await client.post(user.tasks_url, json=body)).status_code == 201
        for query in QUERIES:
            walked = await _walk(client, user.tasks_url, query)
            for offset in (DEEP_OFFSET - 5, DEEP_OFFSET, DEEP_OFFSET + 17, len(walked) - 3):
                response = await client.get(
                    user.tasks_url, params={**query, "offset": offset, "limit": 20}
                )
                assert response.status_code == 200, response.text
                page = response.json()
                assert [task["id"] for task in page["items"]] == walked[offset : offset + 20]
                assert page["total"] == len(walked)
                more = offset + 20 < len(walked)
                assert (page["next_cursor"] is not None) == more, (query, offset)
