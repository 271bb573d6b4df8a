"""Password hashing (Argon2id through pwdlib) off the event loop, and the password rules.

Hashing costs tens of milliseconds of CPU by design, so it runs in a small thread pool of its own:
the event loop keeps serving other requests while logins are hashed, and the pool's size bounds
how much CPU logins can take. argon2-cffi releases the GIL while it hashes.

The pool is shared fairly between accounts: each account (the email a login names, or the
account changing its password) has at most one hash queued or running at a time, so a loop of
guesses against one account waits behind itself, and everyone else's logins keep their turn.
"""

import asyncio
import contextlib
import os
import secrets
import threading
import unicodedata
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128

# OWASP's minimum for Argon2id: 19 MiB of memory, 2 iterations, 1 degree of parallelism.
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_ITERATIONS = 2
ARGON2_PARALLELISM = 1


def _lower_thread_priority() -> None:
    # Hashing threads yield the CPU to the event loop, so a login flood cannot starve the other
    # routes. Linux gives each thread its own nice value; elsewhere this is a no-op.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def normalize_password(password: str) -> str:
    """NFKC, so the same password typed on different keyboards or systems hashes the same."""
    return unicodedata.normalize("NFKC", password)


@cache
def _common_passwords() -> frozenset[str]:
    # zxcvbn ships the 30,000 most frequent passwords of real leaks, lower-cased.
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def is_common_password(password: str) -> bool:
    folded = normalize_password(password).casefold()
    return folded in _common_passwords() or folded.strip() in _common_passwords()


class _OnePerKey:
    """At most one holder per key at a time; the others wait in arrival order. Locks exist only
    while someone holds or waits for them, so memory follows the keys in use."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class PasswordHasher:
    """Hashes and verifies passwords in a bounded pool of low-priority threads."""

    def __init__(self, *, concurrency: int) -> None:
        self._hash = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=ARGON2_ITERATIONS,
                    memory_cost=ARGON2_MEMORY_KIB,
                    parallelism=ARGON2_PARALLELISM,
                ),
            )
        )
        self._pool = ThreadPoolExecutor(
            max_workers=concurrency,
            thread_name_prefix="password-hash",
            initializer=_lower_thread_priority,
        )
        self._dummy_hash: str | None = None
        self._per_account = _OnePerKey()

    async def hash(self, password: str, *, account: str) -> str:
        """Hash a new password of `account` (an email, or an account id)."""
        async with self._per_account.hold(account):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._pool, self._hash.hash, normalize_password(password)
            )

    async def verify(
        self, password: str, password_hash: str | None, *, account: str
    ) -> tuple[bool, str | None]:
        """Check a password of `account` (an email, or an account id); returns (valid, new hash
        if the stored one needs upgrading).

        With no stored hash (unknown account), a dummy hash is verified anyway, so that the
        response time does not tell whether the account exists.
        """
        if password_hash is None:
            password_hash = await self._dummy()
        async with self._per_account.hold(account):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._pool,
                self._hash.verify_and_update,
                normalize_password(password),
                password_hash,
            )

    @property
    def accounts_hashing(self) -> int:
        """How many accounts have a hash queued or running (each at most one)."""
        return len(self._per_account)

    async def warm_up(self) -> None:
        """Make the dummy hash before the first login, so that login is not slower for it."""
        await self._dummy()

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            loop = asyncio.get_running_loop()
            self._dummy_hash = await loop.run_in_executor(
                self._pool, self._hash.hash, secrets.token_urlsafe(16)
            )
        return self._dummy_hash

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
