"""Bodies of the account routes: signup, login, tokens, profile, password reset."""

import zoneinfo
from functools import cache
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StrictStr,
    model_validator,
)

from backend.auth.emails import canonical_email, lookup_email
from backend.auth.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from backend.schemas.common import (
    RequestModel,
    StoredText,
    Timestamp,
    _blank_to_none,
    trimmed,
)
from backend.schemas.examples import JWKS_EXAMPLE

Email = Annotated[
    EmailStr,
    BeforeValidator(trimmed(320)),
    AfterValidator(canonical_email),
    Field(
        max_length=320,
        description="Trimmed, then it must be a deliverable address: a domain with a dot that is "
        "not reserved (`.test`, `.local`, `localhost`…), no quoted part nor IP literal, at most "
        "64 bytes before the `@` and 254 in all (UTF-8). Stored in one form (Unicode NFC, lower "
        "case, the domain in Unicode: `xn--` punycode is the same address).",
        examples=["ada@example.com"],
    ),
]
NewPassword = Annotated[
    StrictStr,
    Field(
        min_length=MIN_PASSWORD_LENGTH,
        max_length=MAX_PASSWORD_LENGTH,
        description="8 to 128 characters, any Unicode; very common passwords are refused.",
        examples=["correct horse battery staple"],
    ),
]
DisplayName = Annotated[
    Annotated[StoredText, Field(max_length=100)] | None,
    BeforeValidator(_blank_to_none),
    Field(
        default=None,
        description="Trimmed; up to 100 characters; blank means none.",
        examples=["Ada Lovelace"],
    ),
]


class SignupRequest(RequestModel):
    email: Email
    password: NewPassword
    name: DisplayName = None


class LoginRequest(RequestModel):
    email: Annotated[
        StoredText,
        BeforeValidator(trimmed(320)),
        AfterValidator(lookup_email),
        Field(max_length=320),
    ] = Field(
        description="Compared as at signup: trimmed, Unicode NFC, any case, the domain in "
        "Unicode or in `xn--` punycode alike.",
        examples=["ada@example.com"],
    )
    password: Annotated[StrictStr, Field(min_length=1, max_length=1024)] = Field(
        examples=["correct horse battery staple"]
    )


class UserRead(BaseModel):
    id: str = Field(examples=["6a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"])
    email: str | None = Field(examples=["ada@example.com"])
    name: str | None = Field(examples=["Ada Lovelace"])
    time_zone: str = Field(
        description='An IANA time zone name: what "today" means for this user.',
        examples=["Europe/London"],
    )
    created_at: Timestamp


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _iana_time_zone(value: str) -> str:
    if value not in _time_zones():
        raise ValueError("must be an IANA time zone name, such as Europe/Paris or UTC")
    return value


TimeZoneName = Annotated[
    StrictStr,
    AfterValidator(_iana_time_zone),
    Field(
        max_length=64,
        description="An IANA time zone name, exactly as spelled in the tz database "
        "(`Europe/Paris`, `America/New_York`, `UTC`).",
        examples=["Europe/Paris"],
    ),
]


def _profile_schema(schema: dict[str, Any]) -> None:
    schema["minProperties"] = 1
    schema["properties"]["time_zone"].pop("default", None)


class ProfileUpdate(RequestModel):
    """Some fields of the profile (JSON merge patch): a field left out is kept; `name: null`
    (or a blank name) clears the name; `time_zone` cannot be null."""

    model_config = ConfigDict(json_schema_extra=_profile_schema)

    name: DisplayName = None
    # The default only stands for "left out" (see TaskPatch): only fields sent are read.
    time_zone: TimeZoneName = Field(default=None)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("send at least one of name, time_zone")
        return self


class AccountDeletion(RequestModel):
    password: Annotated[StrictStr, Field(min_length=1, max_length=1024)] = Field(
        description="The account's password (local accounts).",
        examples=["correct horse battery staple"],
    )


class ForgotPasswordRequest(RequestModel):
    email: Annotated[
        StoredText,
        BeforeValidator(trimmed(320)),
        AfterValidator(lookup_email),
        Field(max_length=320),
    ] = Field(
        description="The account's email, compared as at login.", examples=["ada@example.com"]
    )


class PasswordResetRequest(RequestModel):
    token: Annotated[StrictStr, Field(min_length=1, max_length=512)] = Field(
        description="The token of the reset link (the `{token}` of `PASSWORD_RESET_URL`).",
        examples=["Vb0pX2m8TqZ5f3yHc9LwR1uKe7NjD4sAo6GiQxEtW0M"],
    )
    new_password: NewPassword


class AuthResponse(BaseModel):
    """What signup, login, refresh and a password change answer."""

    user: UserRead
    access_token: str = Field(description="An EdDSA-signed JWT; send it as `Bearer <token>`.")
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the OAuth token type)
    expires_in: int = Field(description="Seconds until the access token expires.", examples=[900])
    refresh_token: str | None = Field(
        description=(
            "Opaque and single-use: trade it at /api/auth/refresh for new tokens. Null when the "
            "service is configured to send it as an HttpOnly cookie instead."
        ),
        examples=["mJ4v0W2bq8s3ZyXnQe7rT1uKp9LdHf6aGc5oBxVi0Ew"],
    )
    refresh_expires_in: int = Field(
        description="Seconds until the refresh token expires if unused.", examples=[604800]
    )


# Ours have 43 characters; the cap keeps every schema-valid body well under MAX_BODY_BYTES.
RefreshTokenValue = Annotated[StrictStr, Field(min_length=1, max_length=512)]


class RefreshRequest(RequestModel):
    refresh_token: RefreshTokenValue | None = Field(
        default=None,
        description="The refresh token; may be left out when it travels in the cookie.",
    )


class PasswordChangeRequest(RequestModel):
    current_password: Annotated[StrictStr, Field(min_length=1, max_length=1024)]
    new_password: NewPassword


class JsonWebKeySet(BaseModel):
    keys: list[dict[str, str]] = Field(
        description="Public keys only (RFC 7517); pick one by the token header's `kid`.",
        examples=[JWKS_EXAMPLE["keys"]],
    )
