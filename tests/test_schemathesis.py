"""Schemathesis, in-process against the ASGI app, as a real signed-up user.

One run of its engine (what `schemathesis run` does) per database: the examples, coverage and
fuzzing phases with positive and negative data on every operation, then the stateful phase over
the document's links (createTask -> getTask / replaceTask / completeTask / deleteTask), with all
the default checks. It must find nothing, and the server must never answer 5xx.

`SCHEMATHESIS_MAX_EXAMPLES` sets the examples per operation (100 under CI=true, 25 otherwise);
`SCHEMATHESIS_SEED` replays a run (the seed is in the summary). The summary, with the number of
generated cases and the statuses seen, is printed and written to
`test-output/schemathesis/summary-<database>.json`.
"""

import json
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis import AuthContext, Case, HookContext, Response
from schemathesis.config import OutputConfig
from schemathesis.core.failures import Failure
from schemathesis.engine import Status, events, from_schema
from schemathesis.engine.run import PhaseName
from schemathesis.engine.statistic import Statistic
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.python import asgi
from schemathesis.schemas import BaseSchema

from backend.main import create_app
from tests.conftest import IN_CI, TEST_PASSWORD, SettingsFactory, SignedUp
from tests.helpers import mint

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output" / "schemathesis"
# Schemathesis's default statuses for "invalid data was rejected", and 413.
NEGATIVE_REJECTIONS = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx",
]  # fmt: skip
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "100" if IN_CI else "25"))


@dataclass
class FuzzUser:
    """The signed-up user the run acts as. Its token is checked before every case and renewed by
    logging in again when an operation under test (logout-all) has ended every session."""

    client: asgi.ASGIClient
    id: str
    email: str
    token: str
    logins: int = 0

    def current_token(self) -> str:
        me = self.client.get("/api/auth/me", headers={"Authorization": f"Bearer {self.token}"})
        if me.status_code == 401:
            login = self.client.post(
                "/api/auth/login", json={"email": self.email, "password": TEST_PASSWORD}
            )
            assert login.status_code == 200, login.text
            self.token = login.json()["access_token"]
            self.logins += 1
        return self.token


def sign_up_fuzz_user(client: asgi.ASGIClient) -> FuzzUser:
    email = f"fuzz-{uuid.uuid4().hex[:10]}@example.com"
    response = client.post("/api/auth/signup", json={"email": email, "password": TEST_PASSWORD})
    assert response.status_code == 201, response.text
    body = response.json()
    return FuzzUser(client, body["user"]["id"], email, body["access_token"])


def _problem(response: Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def is_documented_refusal(failure: Failure, case: Case[Any], response: Response) -> bool:
    """Schema-valid requests that the contract refuses on purpose, for reasons a JSON Schema
    cannot state. Only these exact refusals are excused; any other 400, 412 or 422 fails the run."""
    if not isinstance(failure, RejectedPositiveData) or response.status_code not in {400, 412, 422}:
        return False
    problem = _problem(response)
    code = problem.get("code")
    if response.status_code == 422:
        # An `Idempotency-Key` already used for another request: the generator sends the
        # document's example key with every write (retries are tests/test_idempotency.py's).
        return code == "idempotency_key_reused"
    errors = problem.get("errors") or [{}]
    loc, msg = errors[0].get("loc"), str(errors[0].get("msg", ""))
    operation = case.operation.definition.raw.get("operationId")
    return (
        # The current password is a secret the generator cannot know (400 `wrong_password`),
        # and a new password from the list of most common ones is refused (`weak_password`).
        (operation in {"signup", "changePassword"} and code == "weak_password")
        or (operation in {"changePassword", "deleteCurrentUser"} and code == "wrong_password")
        # A reset token is a secret that only the mailed link holds.
        or (operation == "resetPassword" and code in {"invalid_reset_token", "weak_password"})
        # Which time zone names exist is the tz database's list, not a pattern.
        or (
            operation == "updateCurrentUser"
            and code == "validation_error"
            and loc == ["body", "time_zone"]
        )
        or (operation == "listTasks" and code == "validation_error" and loc == ["query", "tz"])
        # A task cannot move next to itself (the generator may name it in the body).
        or (operation == "moveTask" and msg == "a task cannot move next to itself")
        # `format: email` is syntax only; we also refuse reserved domains (`x@y.test`).
        or (operation == "signup" and code == "validation_error" and loc == ["body", "email"])
        # Two valid dates in the wrong order are an empty range, which the contract refuses.
        or (operation == "listTasks" and msg == "due_after must not be later than due_before")
        # An `If-Match` that does not name the task's version (the generator cannot know it).
        or (response.status_code == 412 and code == "precondition_failed")
        # A cursor is opaque: only one the server made is one (`invalid_cursor` otherwise).
        or code == "invalid_cursor"
        # Entity-tag lists: the generator does not keep header values to their `pattern`.
        or (
            code == "validation_error"
            and isinstance(loc, list)
            and loc[:1] == ["header"]
            and loc[1:] in (["If-Match"], ["If-None-Match"])
        )
    )


@dataclass
class FuzzReport:
    database: str
    seed: int
    max_examples: int
    statistic: Statistic = field(default_factory=Statistic)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    phases: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    checks: set[str] = field(default_factory=set)
    links: int = 0
    logins: int = 0

    def on_event(self, event: events.EngineEvent) -> None:
        if isinstance(event, events.ScenarioFinished) and event.is_test_scenario:
            self.statistic.on_scenario_finished(event.recorder)
            recorder = event.recorder
            self.checks.update(check.name for ran in recorder.checks.values() for check in ran)
            for case_id, interaction in recorder.interactions.items():
                if interaction.response is not None and case_id in recorder.cases:
                    # Labelled by the request's method: the coverage phase also sends methods
                    # that the path does not document, to check the 405.
                    case = recorder.cases[case_id].value
                    label = f"{case.method.upper()} {case.operation.path}"
                    self.statuses[(label, interaction.response.status_code)] += 1
        elif isinstance(event, events.PhaseStarted) and isinstance(
            event.payload, events.StatefulPhasePayload
        ):
            self.links = event.payload.transitions_total
        elif isinstance(event, events.PhaseFinished):
            self.phases[event.phase.name.value] = event.status.value
        elif isinstance(event, events.NonFatalError):
            self.errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            self.errors.append(f"fatal: {event.exception!r}")

    def server_errors(self) -> list[str]:
        return [f"{label} -> {status}" for (label, status) in self.statuses if status >= 500]

    def failures_text(self) -> str:
        config = OutputConfig()
        return "\n\n".join(
            f"{label}\n{group.format(index=None, curl=group.code_sample, config=config)}"
            for label, groups in self.statistic.failures.items()
            for group in groups.values()
        )

    def summary(self) -> dict[str, Any]:
        by_status = Counter[int]()
        for (_, status), count in self.statuses.items():
            by_status[status] += count
        return {
            "database": self.database,
            "seed": self.seed,
            "max_examples_per_operation": self.max_examples,
            "operations_tested": len(self.statistic.tested_operations),
            "generated_cases": self.statistic.total_cases,
            "failures": self.statistic.total_failures,
            "errors": self.errors,
            "relogins_after_logout_all": self.logins,
            "phases": self.phases,
            "checks": sorted(self.checks),
            "stateful_links": self.links,
            "statuses": dict(sorted(by_status.items())),
            "statuses_by_operation": {
                f"{label} {status}": count
                for (label, status), count in sorted(self.statuses.items())
            },
        }


EVENTS = "GET /api/{user_id}/events"


def run_schemathesis(app: FastAPI, *, database: str) -> FuzzReport:
    seed = int(os.environ.get("SCHEMATHESIS_SEED") or random.randrange(2**32))
    # Entering the client starts the app's lifespan on schemathesis's own event loop.
    with asgi.get_client(cast(asgi.ASGIApp, app)) as client:
        user = sign_up_fuzz_user(client)
        config = schemathesis.Config.from_dict(
            {
                "seed": seed,
                # Every operation under /api/{user_id}/ is exercised as the fuzz user's own.
                "parameters": {"user_id": user.id},
                "generation": {"mode": "all", "max-examples": MAX_EXAMPLES},
                "checks": {
                    # A body over MAX_BODY_BYTES (a huge invalid string) is refused with 413,
                    # before it is read: a documented rejection, missing from the default list.
                    "negative_data_rejection": {"expected-statuses": NEGATIVE_REJECTIONS}
                },
            }
        )
        schema: BaseSchema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)

        class SessionAuth:
            def get(self, case: Case[Any], ctx: AuthContext) -> str:
                if case.operation.label == EVENTS:
                    # A stream lasts as long as its token: one of a second, so that the
                    # client (which reads a body to its end) gets the stream's end.
                    return mint(user.id, exp=int(time.time()) + 1)
                return user.current_token()

            def set(self, case: Case[Any], data: str, ctx: AuthContext) -> None:
                case.headers["Authorization"] = f"Bearer {data}"

        schema.auth(refresh_interval=None)(SessionAuth)

        def filter_failure(
            context: HookContext, failure: Failure, case: Case[Any], response: Response
        ) -> bool:
            return not is_documented_refusal(failure, case, response)

        schema.hook(filter_failure)

        report = FuzzReport(database=database, seed=seed, max_examples=MAX_EXAMPLES)
        for event in from_schema(schema).execute():
            report.on_event(event)
        report.logins = user.logins
    return report


@pytest.fixture
def fuzz_app(make_settings: SettingsFactory) -> Any:
    settings = make_settings(
        # The run writes thousands of tasks and signs up hundreds of users in a minute or two.
        task_write_rate_limit="1000000/minute",
        signup_rate_limit="1000000/minute",
        login_rate_limit="1000000/minute",
        login_lockout="1000000/minute",
        log_level="WARNING",
        events_check_seconds=0.2,
    )
    app = create_app(settings)
    try:
        yield app
    finally:
        asgi.shutdown_lifespans()


def test_schemathesis_finds_no_failure(fuzz_app: FastAPI, database_url: str) -> None:
    database = database_url.split(":", 1)[0].split("+", 1)[0]
    report = run_schemathesis(fuzz_app, database=database)
    summary = report.summary()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / f"summary-{database}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "statuses_by_operation"}))

    operations = {
        f"{method.upper()} {path}"
        for path, item in fuzz_app.openapi()["paths"].items()
        for method in item
    }
    assert report.errors == [], report.errors
    assert report.statistic.total_failures == 0, f"seed {report.seed}:\n{report.failures_text()}"
    assert report.server_errors() == []
    assert report.statistic.tested_operations == operations
    # Every testing phase ran and passed (auth bootstrap is skipped: the run brings its user).
    for phase in (PhaseName.EXAMPLES, PhaseName.COVERAGE, PhaseName.FUZZING):
        assert report.phases[phase.value] == Status.SUCCESS.value, report.phases
    assert report.phases[PhaseName.STATEFUL_TESTING.value] == Status.SUCCESS.value, report.phases
    assert report.links >= 4  # createTask -> getTask, replaceTask, completeTask, deleteTask


# --- What schemathesis found, pinned as plain tests -----------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/auth/login", {"email": "a\x00@example.com", "password": "x"}),
        ("POST", "/api/auth/signup", {"email": "b@example.com", "password": "p" * 9, "name": "\0"}),
        ("POST", "{tasks}", {"title": "Buy\x00milk"}),
        ("POST", "{tasks}", {"title": "Buy milk", "description": "\x00"}),
        ("GET", "{tasks}?q=milk%00", None),
    ],
)
async def test_text_with_a_nul_character_is_400_not_500(
    client: httpx.AsyncClient, user: SignedUp, method: str, path: str, body: Any
) -> None:
    # PostgreSQL text cannot hold U+0000; storing or searching it was a 500 there.
    response = await client.request(
        method, path.format(tasks=user.tasks_url), json=body, headers=user.headers
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize("query", ["due_before=0", "due_after=1700000000", "due_before=2026-1-5"])
async def test_list_date_bounds_are_calendar_dates_not_timestamps(
    client: httpx.AsyncClient, user: SignedUp, query: str
) -> None:
    response = await client.get(f"{user.tasks_url}?{query}", headers=user.headers)
    assert response.status_code == 400, response.text


async def test_405_names_every_method_of_the_path(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    # Starlette named only the methods of the first route of the path (`Allow: GET`).
    tasks = await client.request("OPTIONS", user.tasks_url, headers=user.headers)
    assert tasks.status_code == 405
    assert tasks.headers["allow"] == "GET, HEAD, POST"
    one = await client.request("OPTIONS", f"{user.tasks_url}/{uuid.uuid4()}")
    assert one.headers["allow"] == "DELETE, GET, HEAD, PATCH, PUT"
    complete = await client.get(f"{user.tasks_url}/{uuid.uuid4()}/complete")
    assert complete.headers["allow"] == "PATCH"
