"""Sessions: what a successful signup or login hands out."""

from backend.auth.tokens import AccessTokenIssuer
from backend.schemas import AuthResponse, UserRead
from backend.services.users import Account


def user_read(account: Account) -> UserRead:
    return UserRead(
        id=account.id, email=account.email, name=account.name, created_at=account.created_at
    )


def start_session(access_tokens: AccessTokenIssuer, account: Account) -> AuthResponse:
    access = access_tokens.issue(account.id)
    return AuthResponse(
        user=user_read(account), access_token=access.token, expires_in=access.expires_in
    )
