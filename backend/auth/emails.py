"""The one canonical form of an email address: what signup stores and every lookup compares.

email-validator's normalised form (the local part in Unicode NFC, the domain as lower-case
Unicode, so `xn--` punycode and its Unicode spelling are one domain), then lower-cased as a whole:
emails compare case-insensitively. It is what signup has always stored (pydantic's `EmailStr`,
then lower-cased; lower-casing keeps NFC text NFC), so stored addresses need no migration.
"""

from pydantic.networks import validate_email


def canonical_email(address: str) -> str:
    """The canonical form of a valid address; ValueError when it is not one."""
    _, normalized = validate_email(address)
    return normalized.lower()


def lookup_email(address: str) -> str:
    """The form to look an address up by: canonical when valid. Any other text can belong to no
    account, but is still lower-cased, so that its failed logins count under one key."""
    try:
        return canonical_email(address)
    except ValueError:
        return address.lower()
