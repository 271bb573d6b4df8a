"""Safe retries in the request pipeline: the `Idempotency-Key` of POST and PATCH under
/api/{user_id}/, around the key store of `backend/services/idempotency.py` (the contract's rule
is in that module's docstring).

The pipeline (`backend/routing.py`) calls, for an owner's POST or PATCH:

1. `idempotent_request(request)`, after the token, the owner and the task-write limit: None
   without the header, 400 for a key that is not 1 to 255 printable ASCII characters; else the
   request's fingerprint (its body is read here, and kept for the handler).
2. `IdempotentRequest.claim(unit, user_id)`, in the request's unit of work once the account is
   known (a revoked token gets its 401 before any kept answer): None when the request holds the
   key and runs, or the kept answer to give again (`Idempotent-Replayed: true`), or 409 / 422.
3. `IdempotentRequest.settle(...)`, around the request's work: once the work has ended (its
   writes committed), its answer is kept for repeats, or the key let go so that a retry runs
   anew. A domain error that is to be kept (a 404, a 409 `too_many_tasks`) is rendered here, as
   the app's error handler renders it, so that the answer kept is the one sent.

The bookkeeping after the work runs in a short unit of work of its own. If it fails (the
database went away in between), the answer is still given, and the claim lapses with its lease.
"""

import inspect
import logging
from collections.abc import Awaitable
from typing import Any

from fastapi import Request, Response

from backend.db import Database, UnitOfWork
from backend.errors import AppError, ValidationFailed
from backend.infrastructure import get_settings, provided
from backend.services import idempotency
from backend.services.idempotency import Answer, Claim, Policy

logger = logging.getLogger("backend.safe_retries")

_HEADER = idempotency.KEY_HEADER.lower()


async def idempotent_request(request: Request) -> "IdempotentRequest | None":
    """The request's `Idempotency-Key` and fingerprint, for the owner's POST and PATCH that send
    one (400 for a key that is not valid); None otherwise."""
    if request.method not in idempotency.METHODS:
        return None
    keys = request.headers.getlist(_HEADER)
    if not keys:
        return None
    if len(keys) > 1 or not idempotency.KEY.fullmatch(keys[0]):
        raise ValidationFailed(
            "must be one key of 1 to 255 printable ASCII characters",
            loc=("header", _HEADER),
            type_="idempotency_key",
        )
    query = request.scope.get("query_string", b"").decode("latin-1")
    target = f"{request.url.path}?{query}" if query else request.url.path
    fingerprint = idempotency.fingerprint(request.method, target, await request.body())
    policy = Policy.from_settings(await provided(request, get_settings))
    return IdempotentRequest(keys[0], fingerprint, policy)


class IdempotentRequest:
    """One request that carries an `Idempotency-Key`, from its claim to its kept answer."""

    __slots__ = ("_claim", "fingerprint", "key", "policy")

    def __init__(self, key: str, fingerprint: str, policy: Policy) -> None:
        self.key = key
        self.fingerprint = fingerprint
        self.policy = policy
        self._claim: Claim | None = None

    async def claim(self, unit: UnitOfWork, user_id: str) -> Response | None:
        """None when this request is to run (it holds the key), or the answer to give instead:
        the one kept for it. 409 while the first request runs, 422 for another request."""
        if self._claim is not None:  # the work runs again after a conflict: the key is held
            return None
        outcome = await idempotency.claim(
            unit, user_id=user_id, key=self.key, fingerprint=self.fingerprint, policy=self.policy
        )
        if isinstance(outcome, Answer):
            return replayed(outcome)
        self._claim = outcome
        return None

    async def settle(
        self, request: Request, database: Database, work: Awaitable[Response]
    ) -> Response:
        """The answer of the request's `work` (its unit of work, the claim and the handler),
        kept for repeats once the work has ended, or not (then the key is let go)."""
        try:
            response = await work
        except AppError as error:
            if self._claim is None or not idempotency.is_kept(error.status_code):
                await self._let_go(database)
                raise
            response = await _rendered(request, error)
        except BaseException:
            await self._let_go(database)
            raise
        if self._claim is not None:
            body = getattr(response, "body", None)
            if idempotency.is_kept(response.status_code) and isinstance(body, bytes):
                await self._keep(database, _answer_of(response, body))
            else:
                await self._let_go(database)
        return response

    async def _keep(self, database: Database, answer: Answer) -> None:
        claim, self._claim = self._claim, None
        if claim is None:
            return
        try:
            async with database.unit(write=False) as unit:
                recorded = await idempotency.record(unit, claim, answer)
        except Exception:
            logger.warning(
                "the answer to a request with an Idempotency-Key was not kept; the key lapses "
                "with its lease",
                exc_info=True,
            )
            return
        if recorded:  # a new answer: now and then, expired ones go
            try:
                async with database.unit(write=False) as unit:
                    await idempotency.purge_now_and_then(unit)
            except Exception:
                logger.warning("expired idempotency records were not purged", exc_info=True)

    async def _let_go(self, database: Database) -> None:
        claim, self._claim = self._claim, None
        if claim is None:
            return
        try:
            async with database.unit(write=False) as unit:
                await idempotency.release(unit, claim)
        except Exception:
            logger.warning(
                "the Idempotency-Key of a request that did not complete was not let go; it "
                "lapses with its lease",
                exc_info=True,
            )


def _answer_of(response: Response, body: bytes) -> Answer:
    headers = response.headers
    return Answer(
        status=response.status_code,
        body=body,
        content_type=headers.get("content-type"),
        location=headers.get("location"),
        etag=headers.get("etag"),
    )


def replayed(answer: Answer) -> Response:
    """A kept answer, given again: its status, body, `Location` and `ETag`, as first sent."""
    kept = {"Content-Type": answer.content_type, "Location": answer.location, "ETag": answer.etag}
    headers = {name: value for name, value in kept.items() if value is not None}
    headers[idempotency.REPLAYED_HEADER] = "true"
    return Response(answer.body, status_code=answer.status, headers=headers)


async def _rendered(request: Request, error: AppError) -> Response:
    """The error as the app's own handler for it renders it (`backend/errors.py`)."""
    handlers: dict[Any, Any] = request.app.exception_handlers
    handler = next(handlers[kind] for kind in type(error).__mro__ if kind in handlers)
    response = handler(request, error)
    rendered: Response = await response if inspect.isawaitable(response) else response
    return rendered
