"""Rate limits, with the `limits` library: counters in Redis when `REDIS_URL` is set (shared by
every worker), in process memory otherwise.

- signups per client IP, login attempts per client IP, task writes per user, password reset
  requests and resets per client IP and per email;
- failed logins per account: past the limit the account is locked, even for the right password,
  until the window has passed (counted per email, whether or not the account exists, so the lock
  tells nothing about existence).

Windows move: the moving-window strategy remembers each counted event, so "10 failures in 15
minutes" means exactly that, and Retry-After is exact. Task writes, which are many, use the
sliding-window counter instead (two counters per key, an approximation of the same).
If Redis stops answering, the limiter falls back to process memory and says so in the log, so a
Redis outage neither locks everyone out nor removes the limits.
"""

import asyncio
import bisect
import ipaddress
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from backend.config import Settings
from backend.errors import RateLimited
from backend.metrics import RATE_LIMIT_REFUSALS

logger = logging.getLogger("backend.ratelimit")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the window frees a slot

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }


class _MemoryStorage(MemoryStorage):
    """limits 5.8.0's in-memory storage, with two fixes to its expiry sweep, which only frees
    memory (every read skips expired entries by itself):

    - it read each key after awaiting that key's lock, and failed with KeyError ("Task exception
      was never retrieved") when the key was cleared meanwhile, as a successful login clears its
      failure count;
    - it started a sweep of every key on nearly every hit (a new task each time); it now runs
      at most once per `SWEEP_INTERVAL_SECONDS`.
    """

    SWEEP_INTERVAL_SECONDS = 1.0
    _next_sweep = 0.0

    async def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 (the name it replaces)
        now = time.monotonic()
        if now < self._next_sweep or (self.timer is not None and not self.timer.done()):
            return
        self._next_sweep = now + self.SWEEP_INTERVAL_SECONDS
        self.timer = asyncio.create_task(self._MemoryStorage__expire_events())

    async def _MemoryStorage__expire_events(self) -> None:  # noqa: N802 (the name it replaces)
        now = time.time()
        try:
            for key in list(self.events):
                async with self.locks[key]:
                    events = self.events.get(key)
                    if events:
                        cutoff = bisect.bisect_left(events, -now, key=lambda e: -e.expiry)
                        events[:] = events[:cutoff]
                    if not events:
                        self.events.pop(key, None)
                        self.locks.pop(key, None)
            for key in list(self.expirations):
                if self.expirations.get(key, now + 1) <= now:
                    self.storage.pop(key, None)
                    self.expirations.pop(key, None)
                    self.locks.pop(key, None)
        except asyncio.CancelledError:  # shutting down, as the original does
            return


@dataclass(frozen=True, slots=True)
class Strategies:
    exact: MovingWindowRateLimiter
    cheap: SlidingWindowCounterRateLimiter

    def for_item(
        self, item: RateLimitItem, limiter: "RateLimiter"
    ) -> MovingWindowRateLimiter | SlidingWindowCounterRateLimiter:
        return self.cheap if item is limiter.task_write else self.exact


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.signup = parse(settings.signup_rate_limit)
        self.login = parse(settings.login_rate_limit)
        self.lockout = parse(settings.login_lockout)
        self.refresh = parse(settings.refresh_rate_limit)
        self.password_change = parse(settings.password_change_rate_limit)
        self.password_reset = parse(settings.password_reset_rate_limit)
        self.task_write = parse(settings.task_write_rate_limit)
        memory = _MemoryStorage()
        self._memory = Strategies(
            MovingWindowRateLimiter(memory), SlidingWindowCounterRateLimiter(memory)
        )
        self._shared: Strategies | None = None
        self._pool: redis.asyncio.ConnectionPool | None = None
        if settings.redis_url:
            # Our own pool, so that it can be closed, with short timeouts: a Redis that does not
            # answer must cost a request about a second at most, then memory takes over.
            self._pool = redis.asyncio.ConnectionPool.from_url(
                settings.redis_url.removeprefix("async+"),
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
            )
            # limits types its pass-through options narrowly; it does accept a connection pool.
            storage = RedisStorage(
                "async+" + settings.redis_url.removeprefix("async+"),
                implementation="redispy",
                key_prefix=settings.rate_limit_key_prefix,
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
            self._shared = Strategies(
                MovingWindowRateLimiter(storage), SlidingWindowCounterRateLimiter(storage)
            )
        self._degraded_since: float | None = None

    async def _call(self, operation: str, item: RateLimitItem, *key: str) -> Any:
        if self._shared is not None:
            try:
                result = await getattr(self._shared.for_item(item, self), operation)(item, *key)
            except Exception as exc:  # any Redis failure: count in memory instead
                if self._degraded_since is None:
                    logger.warning("rate limits fall back to process memory: Redis: %s", exc)
                    self._degraded_since = time.monotonic()
            else:
                if self._degraded_since is not None:
                    logger.warning("rate limits are shared through Redis again")
                    self._degraded_since = None
                return result
        return await getattr(self._memory.for_item(item, self), operation)(item, *key)

    async def _decision(self, allowed: bool, item: RateLimitItem, *key: str) -> Decision:
        stats = await self._call("get_window_stats", item, *key)
        return Decision(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, int(stats.remaining)),
            reset_after=max(1, math.ceil(stats.reset_time - time.time())),
        )

    async def hit(self, item: RateLimitItem, *key: str) -> Decision:
        """Count one event; the decision says whether it was within the limit."""
        allowed = bool(await self._call("hit", item, *key))
        return await self._decision(allowed, item, *key)

    async def clear(self, item: RateLimitItem, *key: str) -> None:
        await self._call("clear", item, *key)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


def too_many(decision: Decision, detail: str, *, limit: str) -> RateLimited:
    """The 429 for a refused `decision`, counted under `limit` (the limit's name)."""
    RATE_LIMIT_REFUSALS.labels(limit).inc()
    return RateLimited(
        detail, headers={"Retry-After": str(decision.reset_after), **decision.headers()}
    )


class LoginLockout:
    """Failed logins per account (by email): locked past the limit until the window passes.

    Every attempt is counted before the password is checked, and a successful one clears the
    count: checking first and counting after the (slow) verification would let concurrent
    attempts slip through together.
    """

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def attempt(self, email: str) -> None:
        decision = await self._limiter.hit(self._limiter.lockout, "login-failures", email)
        if not decision.allowed:
            raise too_many(
                decision,
                "Too many failed logins for this account; try again in "
                f"{decision.reset_after} seconds.",
                limit="login-failures",
            )

    async def succeeded(self, email: str) -> None:
        await self._limiter.clear(self._limiter.lockout, "login-failures", email)


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def client_ip(
    peer: str | None, headers: Mapping[str, str], trusted_proxies: Sequence[IPNetwork]
) -> str:
    """The client's address: the socket's peer, unless that peer is a trusted proxy; then the
    right-most address in X-Forwarded-For that is not a trusted proxy (addresses left of it were
    written by the client and prove nothing)."""
    if not peer:
        return "unknown"
    if not trusted_proxies or not _is_trusted(peer, trusted_proxies):
        return peer
    forwarded = [part.strip() for part in headers.get("x-forwarded-for", "").split(",")]
    for address in reversed([part for part in forwarded if part]):
        if not _is_trusted(address, trusted_proxies):
            return address if _is_ip(address) else peer
    return peer


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
