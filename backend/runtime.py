"""The objects one worker process keeps for its lifetime, built in the app's lifespan.

Nothing in here is state that matters between requests: any number of workers can serve the same
database, each with its own pool, caches and hashing threads.
"""

from dataclasses import dataclass
from datetime import timedelta

import httpx

from backend.auth.keys import LocalKeys, RemoteJwks
from backend.auth.passwords import PasswordHasher
from backend.auth.tokens import ACCESS_TOKEN_TYPE, AccessTokenIssuer, TokenVerifier, TrustedIssuer
from backend.config import Settings
from backend.db import Database
from backend.events import Hub
from backend.mail import Background, Mailer
from backend.models import AuthProvider
from backend.ratelimit import IPNetwork, LoginLockout, RateLimiter, parse_networks
from backend.services.sessions import SessionPolicy


@dataclass(slots=True)
class Runtime:
    settings: Settings
    db: Database
    hasher: PasswordHasher
    local_keys: LocalKeys
    access_tokens: AccessTokenIssuer
    verifier: TokenVerifier
    better_auth_keys: RemoteJwks | None
    http: httpx.AsyncClient
    session_policy: SessionPolicy
    limiter: RateLimiter
    lockout: LoginLockout
    trusted_proxies: tuple[IPNetwork, ...]
    mailer: Mailer
    background: Background
    hub: Hub

    @classmethod
    async def start(cls, settings: Settings) -> "Runtime":
        local_keys = LocalKeys.from_settings(settings)
        lifetime_seconds = settings.access_token_expire_minutes * 60
        access_tokens = AccessTokenIssuer(
            local_keys,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            lifetime_seconds=lifetime_seconds,
        )
        issuers = [
            TrustedIssuer(
                provider=AuthProvider.local,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                keys=local_keys,
                token_type=ACCESS_TOKEN_TYPE,
                lifetime_seconds=lifetime_seconds,
            )
        ]
        http = httpx.AsyncClient(follow_redirects=False)
        better_auth_keys = None
        if settings.jwks_url:
            better_auth_keys = RemoteJwks(
                url=settings.jwks_url,
                client=http,
                cache_seconds=settings.better_auth_jwks_cache_seconds,
                cooldown_seconds=settings.better_auth_jwks_refetch_cooldown_seconds,
                timeout_seconds=settings.better_auth_jwks_timeout_seconds,
                max_bytes=settings.better_auth_jwks_max_bytes,
            )
            assert settings.better_auth_token_issuer
            assert settings.better_auth_token_audience
            issuers.append(
                TrustedIssuer(
                    provider=AuthProvider.better_auth,
                    issuer=settings.better_auth_token_issuer,
                    audience=settings.better_auth_token_audience,
                    keys=better_auth_keys,
                    require_verified_email=settings.better_auth_require_verified_email,
                )
            )
        limiter = RateLimiter(settings)
        hasher = PasswordHasher(concurrency=settings.password_hash_concurrency)
        await hasher.warm_up()
        database = Database(settings)
        hub = Hub(settings, database)
        await hub.start()
        return cls(
            settings=settings,
            db=database,
            hasher=hasher,
            local_keys=local_keys,
            access_tokens=access_tokens,
            verifier=TokenVerifier(
                issuers,
                leeway_seconds=settings.jwt_leeway_seconds,
                max_token_bytes=settings.max_token_bytes,
                cache_size=settings.token_cache_size,
            ),
            better_auth_keys=better_auth_keys,
            http=http,
            session_policy=SessionPolicy(
                absolute=timedelta(days=settings.refresh_token_expire_days),
                idle=timedelta(days=settings.refresh_token_idle_days),
                max_sessions=settings.max_sessions_per_user,
            ),
            limiter=limiter,
            lockout=LoginLockout(limiter),
            trusted_proxies=parse_networks(settings.trusted_proxies),
            mailer=Mailer(settings),
            background=Background(),
            hub=hub,
        )

    async def stop(self) -> None:
        # Open streams end first (they give their leases back through the database).
        await self.hub.stop()
        # Mails being sent when the server stops get a few seconds to go out.
        await self.background.close(timeout_seconds=self.settings.smtp_timeout_seconds)
        if self.better_auth_keys is not None:
            await self.better_auth_keys.close()
        await self.http.aclose()
        await self.limiter.close()
        await self.db.dispose()
        self.hasher.close()
