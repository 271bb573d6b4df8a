"""A model-based test of the changes feed (hypothesis, stateful): two writers make random
creates, replaces, completes, deletes, restores and clear-completed; a syncing client applies
the feed at random moments; after a final sync, its copy equals the server's live tasks exactly
(ids, fields, versions). On both databases."""

import uuid
from contextlib import AsyncExitStack
from typing import Any

import httpx
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from backend.config import Settings
from tests.conftest import client_for, running_app, sign_up
from tests.helpers import BackgroundLoop, login

TITLES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=12
).filter(lambda text: text.strip())


def test_a_syncing_client_ends_with_exactly_the_server_s_tasks(settings: Settings) -> None:
    loop = BackgroundLoop()
    resources = AsyncExitStack()
    app = loop.run(resources.enter_async_context(running_app(settings)))
    client: httpx.AsyncClient = loop.run(resources.enter_async_context(client_for(app)))

    class Sync(RuleBasedStateMachine):
        tasks = Bundle("tasks")

        @initialize()
        def start(self) -> None:
            user = loop.run(sign_up(client))
            second = loop.run(login(client, user))
            self.user = user
            # Two writers: two sessions of the user.
            self.writers = [user.headers, {"Authorization": f"Bearer {second['access_token']}"}]
            self.copy: dict[str, Any] = {}
            self.cursor: str | None = None

        def call(self, writer: int, method: str, path: str, body: Any = None) -> httpx.Response:
            return loop.run(
                client.request(
                    method,
                    f"/api/{self.user.id}{path}",
                    headers=self.writers[writer],
                    **({} if body is None else {"json": body}),
                )
            )

        @rule(target=tasks, writer=st.integers(0, 1), title=TITLES, completed=st.booleans())
        def create(self, writer: int, title: str, completed: bool) -> str:
            response = self.call(writer, "POST", "/tasks", {"title": title, "completed": completed})
            assert response.status_code == 201, response.text
            task_id: str = response.json()["id"]
            return task_id

        @rule(
            writer=st.integers(0, 1),
            task=tasks,
            title=TITLES,
            priority=st.sampled_from(["low", "medium", "high"]),
        )
        def replace(self, writer: int, task: str, title: str, priority: str) -> None:
            response = self.call(
                writer, "PUT", f"/tasks/{task}", {"title": title, "priority": priority}
            )
            assert response.status_code in (200, 404), response.text

        @rule(writer=st.integers(0, 1), task=tasks, completed=st.none() | st.booleans())
        def complete(self, writer: int, task: str, completed: bool | None) -> None:
            body = None if completed is None else {"completed": completed}
            response = self.call(writer, "PATCH", f"/tasks/{task}/complete", body)
            assert response.status_code in (200, 404), response.text

        @rule(writer=st.integers(0, 1), task=tasks)
        def delete(self, writer: int, task: str) -> None:
            assert self.call(writer, "DELETE", f"/tasks/{task}").status_code == 204

        @rule(writer=st.integers(0, 1), task=tasks)
        def restore(self, writer: int, task: str) -> None:
            response = self.call(writer, "POST", f"/trash/{task}/restore")
            assert response.status_code in (200, 404), response.text

        @rule(writer=st.integers(0, 1))
        def clear_completed(self, writer: int) -> None:
            assert self.call(writer, "POST", "/tasks/clear-completed").status_code == 200

        @rule(limit=st.integers(1, 5))
        def sync(self, limit: int) -> None:
            """Apply one page of the feed."""
            params: dict[str, str | int] = {"limit": limit}
            if self.cursor is not None:
                params["since"] = self.cursor
            response = loop.run(
                client.get(f"/api/{self.user.id}/changes", params=params, headers=self.writers[0])
            )
            assert response.status_code == 200, response.text
            page = response.json()
            for change in page["changes"]:
                if change["op"] == "upsert":
                    self.copy[change["task"]["id"]] = change["task"]
                else:
                    self.copy.pop(change["id"], None)
            self.cursor = page["next"]

        @invariant()
        def ids_are_uuids(self) -> None:
            for task_id in getattr(self, "copy", {}):
                uuid.UUID(task_id)

        def teardown(self) -> None:
            if not hasattr(self, "user"):
                return
            while True:
                before = self.cursor
                self.sync(limit=50)
                if self.cursor == before:
                    break
            listed = self.call(0, "GET", "/tasks?limit=100").json()
            assert listed["total"] <= 100
            assert self.copy == {task["id"]: task for task in listed["items"]}

    try:
        run_state_machine_as_test(
            Sync,
            settings=hypothesis_settings(
                max_examples=12,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        loop.run(resources.aclose())
        loop.close()
