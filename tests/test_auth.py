"""Accounts and tokens: signup, login, /me, /jwks, and the one token verifier."""

import asyncio
import base64
import json
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlmodel import select

from backend.models import User
from tests.conftest import TEST_PASSWORD, SignedUp, WithSettings, sign_up
from tests.helpers import OUR_KEY, OUR_KID, assert_problem, bearer, mint


async def stored_user(app: FastAPI, user_id: str) -> User | None:
    async with app.state.runtime.db.session(write=False) as session:
        user: User | None = (await session.exec(select(User).where(User.id == user_id))).first()
        return user


# --- signup ------------------------------------------------------------------------------------


async def test_signup_returns_the_user_and_a_bearer_token(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/auth/signup",
        json={"email": "  Ada@Example.COM ", "password": TEST_PASSWORD, "name": "Ada"},
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "user", "access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in"
    }  # fmt: skip
    assert set(body["user"]) == {"id", "email", "name", "time_zone", "created_at"}
    assert body["user"]["email"] == "ada@example.com"
    assert body["user"]["name"] == "Ada"
    assert body["user"]["created_at"].endswith("Z")
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    me = await client.get("/api/auth/me", headers=bearer(body["access_token"]))
    assert me.json() == body["user"]


async def test_no_response_contains_a_password_hash(client: httpx.AsyncClient) -> None:
    signup = await client.post(
        "/api/auth/signup", json={"email": "h@example.com", "password": TEST_PASSWORD}
    )
    login = await client.post(
        "/api/auth/login", json={"email": "h@example.com", "password": TEST_PASSWORD}
    )
    me = await client.get("/api/auth/me", headers=bearer(login.json()["access_token"]))
    for response in (signup, login, me):
        assert "argon2" not in response.text
        assert "password" not in response.text


async def test_duplicate_email_in_any_case_is_409(client: httpx.AsyncClient) -> None:
    await sign_up(client, email="dup@example.com")
    response = await client.post(
        "/api/auth/signup", json={"email": "DUP@example.com ", "password": TEST_PASSWORD}
    )
    assert_problem(response, 409, "email_taken")


async def test_concurrent_signups_with_one_email_create_one_account(
    client: httpx.AsyncClient,
) -> None:
    responses = await asyncio.gather(
        *(
            client.post(
                "/api/auth/signup", json={"email": "race@example.com", "password": TEST_PASSWORD}
            )
            for _ in range(5)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409, 409]


@pytest.mark.parametrize("password", ["7-chars", "x" * 129])
async def test_password_length_outside_8_to_128_is_refused(
    client: httpx.AsyncClient, password: str
) -> None:
    response = await client.post(
        "/api/auth/signup", json={"email": "len@example.com", "password": password}
    )
    body = assert_problem(response, 400, "validation_error")
    assert body["errors"][0]["loc"] == ["body", "password"]  # type: ignore[index]


async def test_128_characters_with_emoji_are_accepted_and_never_truncated(
    client: httpx.AsyncClient,
) -> None:
    password = "🦊🐙" * 32 + "a" * 63 + "Z"
    assert len(password) == 128
    await sign_up(client, email="emoji@example.com", password=password)
    ok = await client.post(
        "/api/auth/login", json={"email": "emoji@example.com", "password": password}
    )
    assert ok.status_code == 200
    truncated = await client.post(
        "/api/auth/login", json={"email": "emoji@example.com", "password": password[:-1]}
    )
    assert_problem(truncated, 401, "invalid_credentials")


async def test_eight_characters_of_any_script_are_enough(client: httpx.AsyncClient) -> None:
    await sign_up(client, password="пароль-ö")


@pytest.mark.parametrize("password", ["password1", "Password123", "qwertyuiop", "12345678"])
async def test_common_passwords_are_refused_with_a_clear_message(
    client: httpx.AsyncClient, password: str
) -> None:
    response = await client.post(
        "/api/auth/signup", json={"email": "common@example.com", "password": password}
    )
    body = assert_problem(response, 400, "weak_password")
    assert "common" in str(body["detail"])


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": TEST_PASSWORD},
        {"email": "a@example.com", "password": TEST_PASSWORD, "role": "admin"},
        {"email": "a@example.com", "password": 12345678},
        {"email": "a@example.com"},
        {},
    ],
)
async def test_invalid_signup_bodies_are_400(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    assert_problem(await client.post("/api/auth/signup", json=body), 400, "validation_error")


async def test_passwords_are_stored_as_argon2id_with_owasp_parameters(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user = await sign_up(client)
    stored = await stored_user(app, user.id)
    assert stored is not None and stored.password_hash is not None
    assert stored.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert TEST_PASSWORD not in stored.password_hash


# --- login -------------------------------------------------------------------------------------


async def test_login_returns_a_working_token(client: httpx.AsyncClient, user: SignedUp) -> None:
    response = await client.post(
        "/api/auth/login", json={"email": f"  {user.email.upper()} ", "password": user.password}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["user"]["id"] == user.id
    assert (
        await client.get("/api/auth/me", headers=bearer(body["access_token"]))
    ).status_code == 200


# One account, however its address is spelled: Unicode normalisation (NFC), case, spaces, and
# an internationalised domain in Unicode or in punycode.
EMAIL_SPELLINGS = {
    "decomposed (e + U+0301)": "jose\u0301@bu\u0308cher.example",
    "composed": "jos\u00e9@b\u00fccher.example",
    "upper case, spaces": "  JOSE\u0301@B\u00dcCHER.EXAMPLE ",
    "punycode domain": "jos\u00e9@xn--bcher-kva.example",
    "upper-case punycode domain": "JOS\u00c9@XN--BCHER-KVA.EXAMPLE",
}


@pytest.mark.parametrize("signup_as", sorted(EMAIL_SPELLINGS))
async def test_every_spelling_of_an_email_logs_in_to_one_account(
    client: httpx.AsyncClient, signup_as: str
) -> None:
    user = await sign_up(client, email=EMAIL_SPELLINGS[signup_as])
    assert user.body["user"]["email"] == "jos\u00e9@b\u00fccher.example"
    for spelling in EMAIL_SPELLINGS.values():
        response = await client.post(
            "/api/auth/login", json={"email": spelling, "password": user.password}
        )
        assert response.status_code == 200, (spelling, response.text)
        assert response.json()["user"]["id"] == user.id
        again = await client.post(
            "/api/auth/signup", json={"email": spelling, "password": user.password}
        )
        assert_problem(again, 409, "email_taken")


async def test_failed_logins_count_against_the_account_however_it_is_spelled(
    with_settings: WithSettings,
) -> None:
    async with with_settings(login_lockout="2/hour") as (client, _):
        user = await sign_up(client, email=EMAIL_SPELLINGS["composed"])
        for spelling in ("decomposed (e + U+0301)", "punycode domain"):
            wrong = await client.post(
                "/api/auth/login", json={"email": EMAIL_SPELLINGS[spelling], "password": "wrong"}
            )
            assert_problem(wrong, 401, "invalid_credentials")
        locked = await client.post(
            "/api/auth/login", json={"email": user.email, "password": user.password}
        )
        assert_problem(locked, 429, "rate_limited")


async def test_unknown_email_and_wrong_password_answer_identically(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    wrong = await client.post(
        "/api/auth/login", json={"email": user.email, "password": "not the password"}
    )
    unknown = await client.post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": "not the password"}
    )
    for response in (wrong, unknown):
        assert_problem(response, 401, "invalid_credentials")
    strip = {"request_id"}
    assert {k: v for k, v in wrong.json().items() if k not in strip} == {
        k: v for k, v in unknown.json().items() if k not in strip
    }

    def same_for_both(headers: httpx.Headers) -> dict[str, str]:
        # The request id and the per-IP rate-limit budget differ from one request to the next.
        return {
            k: v
            for k, v in headers.items()
            if k not in {"x-request-id", "date"} and not k.startswith("ratelimit-")
        }

    assert same_for_both(wrong.headers) == same_for_both(unknown.headers)


@pytest.mark.serial  # a timing comparison: run alone, not next to other tests
async def test_unknown_email_takes_as_long_as_a_wrong_password(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    async def timed(email: str) -> float:
        started = time.perf_counter()
        response = await client.post(
            "/api/auth/login", json={"email": email, "password": "not the password"}
        )
        assert response.status_code == 401
        return time.perf_counter() - started

    wrong, unknown = [], []
    for _ in range(20):  # interleaved, so machine noise hits both alike
        wrong.append(await timed(user.email))
        unknown.append(await timed("nobody@example.com"))
    wrong_median, unknown_median = statistics.median(wrong), statistics.median(unknown)
    assert abs(wrong_median - unknown_median) <= 0.25 * max(wrong_median, unknown_median), (
        f"medians: wrong password {wrong_median * 1000:.1f} ms, "
        f"unknown email {unknown_median * 1000:.1f} ms"
    )


async def test_login_upgrades_a_hash_made_with_old_parameters(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    weak = Argon2Hasher(time_cost=1, memory_cost=8192, parallelism=1).hash(user.password)
    async with app.state.runtime.db.session(write=True) as session:
        stored = (await session.exec(select(User).where(User.id == user.id))).one()
        stored.password_hash = weak
        session.add(stored)
    response = await client.post(
        "/api/auth/login", json={"email": user.email, "password": user.password}
    )
    assert response.status_code == 200
    upgraded = await stored_user(app, user.id)
    assert upgraded is not None and upgraded.password_hash is not None
    assert upgraded.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


@pytest.mark.serial  # a timing measurement: run alone, not next to other tests
async def test_logins_do_not_stall_other_requests(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    """50 concurrent logins hash in their own thread pool; /health keeps answering quickly."""

    async def health_latencies(count: int) -> list[float]:
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            assert (await client.get("/health")).status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
        return latencies

    baseline = await health_latencies(20)
    logins = [
        client.post("/api/auth/login", json={"email": user.email, "password": user.password})
        for _ in range(50)
    ]
    started = time.perf_counter()
    results, during = await asyncio.gather(asyncio.gather(*logins), health_latencies(30))
    flood_seconds = time.perf_counter() - started
    assert all(r.status_code == 200 for r in results)
    median_during = statistics.median(during)
    print(
        f"/health median {statistics.median(baseline) * 1000:.1f} ms alone, "
        f"{median_during * 1000:.1f} ms (max {max(during) * 1000:.1f} ms) during 50 logins "
        f"that took {flood_seconds:.2f} s"
    )
    assert median_during < 0.05, f"/health median {median_during * 1000:.1f} ms during logins"


# --- /me, /jwks, and token verification --------------------------------------------------------


async def test_jwks_publishes_our_public_key_only(client: httpx.AsyncClient) -> None:
    keys = (await client.get("/api/auth/jwks")).json()["keys"]
    assert len(keys) == 1
    key = keys[0]
    assert key["kty"] == "OKP"
    assert key["crv"] == "Ed25519"
    assert key["alg"] == "EdDSA"
    assert key["kid"] == OUR_KID
    assert "d" not in key
    public = OUR_KEY.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert base64.urlsafe_b64decode(key["x"] + "==") == public


async def test_our_tokens_are_shaped_like_better_auths(user: SignedUp) -> None:
    header = jwt.get_unverified_header(user.token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == OUR_KID
    claims = jwt.decode(user.token, OUR_KEY.public_key(), algorithms=["EdDSA"], audience="todo-api")
    assert claims["sub"] == user.id
    assert claims["iss"] == "todo-api"
    assert claims["exp"] - claims["iat"] == pytest.approx(15 * 60)


async def test_me_without_a_token_is_401_missing_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/auth/me")
    assert_problem(response, 401, "missing_token")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}, {"Cookie": "t=x"}],
)
async def test_only_the_bearer_header_carries_a_token(
    client: httpx.AsyncClient, user: SignedUp, headers: dict[str, str]
) -> None:
    assert_problem(await client.get("/api/auth/me", headers=headers), 401, "missing_token")
    assert_problem(
        await client.get(f"/api/auth/me?access_token={user.token}"), 401, "missing_token"
    )


async def test_expired_token_is_token_expired(client: httpx.AsyncClient, user: SignedUp) -> None:
    token = mint(user.id, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    response = await client.get("/api/auth/me", headers=bearer(token))
    assert_problem(response, 401, "token_expired")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_expiry_within_the_leeway_is_accepted(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    token = mint(user.id, exp=int(time.time()) - 3)
    assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 200


async def test_a_token_that_lives_its_lifetime_is_accepted(
    client: httpx.AsyncClient, user: SignedUp
) -> None:
    now, lifetime = int(time.time()), 15 * 60
    for exp in (now + lifetime, now + lifetime + 5):  # the lifetime, and within the leeway past it
        token = mint(user.id, iat=now, exp=exp)
        assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 200


def _tampered(token: str) -> str:
    header, _, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    return f"{header}.{forged.decode()}.{signature}"


def _alg_none(subject: str) -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"none","kid":"' + OUR_KID.encode() + b'"}')
    now = int(time.time())
    body = json.dumps(
        {"sub": subject, "iat": now, "exp": now + 600, "iss": "todo-api", "aud": "todo-api"}
    )
    payload = base64.urlsafe_b64encode(body.encode())
    return f"{header.rstrip(b'=').decode()}.{payload.rstrip(b'=').decode()}."


def _public_pem() -> bytes:
    return OUR_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hmac_with_public_key(subject: str) -> str:
    # PyJWT itself refuses to sign HS256 with a PEM key; build the token by hand.
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "kid": OUR_KID}).encode())
    body = json.dumps(
        {"sub": subject, "iat": now, "exp": now + 600, "iss": "todo-api", "aud": "todo-api"}
    )
    signing_input = f"{header}.{b64(body.encode())}"
    signature = hmac.new(_public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


INVALID_TOKENS: dict[str, Callable[[str], str]] = {
    "garbage": lambda uid: "not.a.jwt",
    "alg none": _alg_none,
    "tampered payload": lambda uid: _tampered(mint(uid)),
    "another ed25519 key": lambda uid: mint(uid, key=Ed25519PrivateKey.generate()),
    "hmac with our public key": _hmac_with_public_key,
    "unknown kid": lambda uid: mint(uid, headers={"kid": "someone-elses-key"}),
    "no kid": lambda uid: jwt.encode(
        {"sub": uid, "iat": int(time.time()), "exp": int(time.time()) + 60}, OUR_KEY, "EdDSA"
    ),
    "jku header": lambda uid: mint(uid, headers={"jku": "https://evil.example/jwks"}),
    "x5u header": lambda uid: mint(uid, headers={"x5u": "https://evil.example/cert"}),
    "jwk header": lambda uid: mint(uid, headers={"jwk": {"kty": "OKP", "crv": "Ed25519"}}),
    "oversized": lambda uid: mint(uid, padding="x" * 9000),
    "wrong audience": lambda uid: mint(uid, aud="another-api"),
    "wrong issuer": lambda uid: mint(uid, iss="https://evil.example"),
    "no exp": lambda uid: mint(uid, drop=("exp",)),
    "no iat": lambda uid: mint(uid, drop=("iat",)),
    "no sub": lambda uid: mint(uid, drop=("sub",)),
    "no aud": lambda uid: mint(uid, drop=("aud",)),
    "not an access token": lambda uid: mint(uid, typ="refresh"),
    "issued in the future": lambda uid: mint(uid, iat=int(time.time()) + 3600),
    "expired and badly signed": lambda uid: mint(
        uid, key=Ed25519PrivateKey.generate(), exp=int(time.time()) - 3600
    ),
    "numeric subject": lambda uid: mint(uid, sub=12345),
    "NUL in the subject": lambda uid: mint(f"{uid}\x00"),
    "control character in the subject": lambda uid: mint(f"{uid}\n"),
    "lone surrogate in the subject": lambda uid: mint(f"{uid}\ud800"),
    # Ours live ACCESS_TOKEN_EXPIRE_MINUTES (15) from their `iat`, whatever `exp` says.
    "exp in the year 3 trillion": lambda uid: mint(uid, exp=10**20),
    "exp 1e20 as a float": lambda uid: mint(uid, exp=1e20),
    "exp a minute past the lifetime": lambda uid: mint(uid, exp=int(time.time()) + 16 * 60),
    "issued long ago, expiring later": lambda uid: mint(uid, iat=int(time.time()) - 7200),
    "infinite exp": lambda uid: mint(uid, exp=float("inf")),
    "infinite iat": lambda uid: mint(uid, iat=float("-inf")),
    "huge iat": lambda uid: mint(uid, iat=-(10**400)),
    "unknown user": lambda uid: mint("no-such-user"),
}


@pytest.mark.parametrize("case", sorted(INVALID_TOKENS))
async def test_invalid_tokens_are_401_invalid_token(
    client: httpx.AsyncClient, user: SignedUp, case: str
) -> None:
    token = INVALID_TOKENS[case](user.id)
    response = await client.get("/api/auth/me", headers=bearer(token))
    assert_problem(response, 401, "invalid_token")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("issuer", "said"),
    [
        ("https://evil.example", '"https://evil.example"'),
        ("\ud800" + "x" * 300, '"\\ud800' + "x" * 50),  # echoed escaped and shortened
        (42, "42"),
    ],
    ids=["another issuer", "odd text", "not a string"],
)
async def test_untrusted_issuer_is_named_with_the_expected_ones(
    client: httpx.AsyncClient, user: SignedUp, issuer: object, said: str
) -> None:
    now = int(time.time())
    claims = {"sub": user.id, "iat": now, "exp": now + 600, "iss": issuer, "aud": "todo-api"}
    # Signed by our key, but PyJWT's encoder refuses a non-string `iss`: the JWS layer does not.
    token = jwt.PyJWS().encode(
        json.dumps(claims).encode(), OUR_KEY, algorithm="EdDSA", headers={"kid": OUR_KID}
    )
    response = await client.get("/api/auth/me", headers=bearer(token))
    detail = str(assert_problem(response, 401, "invalid_token")["detail"])
    assert said in detail and '"todo-api"' in detail
    assert len(detail) < 400


async def test_token_without_an_issuer_says_so(client: httpx.AsyncClient, user: SignedUp) -> None:
    response = await client.get("/api/auth/me", headers=bearer(mint(user.id, drop=("iss",))))
    detail = str(assert_problem(response, 401, "invalid_token")["detail"])
    assert "no issuer" in detail and '"todo-api"' in detail


async def test_token_of_a_deleted_user_is_401(
    app: FastAPI, client: httpx.AsyncClient, user: SignedUp
) -> None:
    async with app.state.runtime.db.session(write=True) as session:
        stored = (await session.exec(select(User).where(User.id == user.id))).one()
        await session.delete(stored)
    assert_problem(await client.get("/api/auth/me", headers=user.headers), 401, "invalid_token")


async def test_openapi_declares_the_bearer_scheme_on_protected_routes(app: FastAPI) -> None:
    document = app.openapi()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert document["paths"]["/api/auth/me"]["get"]["security"] == [{"bearer": []}]
    assert document["paths"]["/api/{user_id}/tasks"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in document["paths"]["/api/auth/login"]["post"]


@pytest.mark.parametrize(("name", "stored"), [("  Ada  ", "Ada"), ("   ", None), (None, None)])
async def test_signup_name_is_trimmed_and_blank_means_none(
    client: httpx.AsyncClient, name: str | None, stored: str | None
) -> None:
    response = await client.post(
        "/api/auth/signup",
        json={
            "email": f"{uuid.uuid4().hex[:8]}@example.com",
            "password": TEST_PASSWORD,
            "name": name,
        },
    )
    assert response.status_code == 201
    assert response.json()["user"]["name"] == stored


async def test_signup_name_longer_than_100_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/auth/signup",
        json={"email": "long@example.com", "password": TEST_PASSWORD, "name": "n" * 101},
    )
    assert_problem(response, 400, "validation_error")


async def test_a_remembered_token_still_expires() -> None:
    from backend.auth.keys import LocalKeys
    from backend.auth.tokens import TokenVerifier, TrustedIssuer
    from backend.errors import TokenExpired
    from backend.models import AuthProvider

    keys = LocalKeys(OUR_KEY)
    verifier = TokenVerifier(
        [TrustedIssuer(AuthProvider.local, "todo-api", "todo-api", keys, "access")],
        leeway_seconds=1,
        max_token_bytes=8192,
    )
    token = mint("someone", exp=int(time.time()) + 1)
    assert (await verifier.verify(token)).subject == "someone"
    assert (await verifier.verify(token)).subject == "someone"  # from the cache
    await asyncio.sleep(2.5)
    with pytest.raises(TokenExpired):
        await verifier.verify(token)
