"""Password hashing shares its threads fairly: one account's hashes queue behind each other, so a
loop of guesses against one account cannot starve everyone else's logins."""

import asyncio

import httpx

from backend.auth.passwords import PasswordHasher
from tests.conftest import SettingsFactory, client_for, running_app, sign_up


async def test_a_flood_on_one_account_does_not_delay_another_accounts_hash() -> None:
    hasher = PasswordHasher(concurrency=1)
    try:
        stored = await hasher.hash("the right passphrase", account="victim@example.com")
        finished: list[str] = []

        async def verify(account: str, label: str) -> None:
            await hasher.verify("a guess", stored, account=account)
            finished.append(label)

        flood = [asyncio.create_task(verify("victim@example.com", f"guess-{n}")) for n in range(6)]
        await asyncio.sleep(0)  # the six guesses are queued first
        other = asyncio.create_task(verify("someone-else@example.com", "other"))
        await asyncio.gather(*flood, other)
        # A plain FIFO pool would serve the six guesses first; one slot each, the other login
        # waits for at most the guess already running and the one after it.
        assert finished.index("other") <= 2, finished
        assert hasher.accounts_hashing == 0  # nothing kept for accounts no longer hashing
    finally:
        hasher.close()


async def test_concurrent_wrong_passwords_of_one_account_are_all_checked(
    make_settings: SettingsFactory,
) -> None:
    async with running_app(make_settings()) as app, client_for(app) as client:
        user = await sign_up(client)

        async def attempt(password: str) -> httpx.Response:
            return await client.post(
                "/api/auth/login", json={"email": user.email, "password": password}
            )

        responses = await asyncio.gather(
            *(attempt(f"wrong guess number {n}") for n in range(5)), attempt(user.password)
        )
        assert [r.status_code for r in responses] == [401] * 5 + [200]
