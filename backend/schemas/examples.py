"""Example bodies, for the OpenAPI document."""

from typing import Any

USER_EXAMPLE: dict[str, Any] = {
    "id": "4b7e2c1a-9d3f-4e8a-b6c5-1f2a3b4c5d6e",
    "email": "ada@example.com",
    "name": "Ada Lovelace",
    "time_zone": "Europe/London",
    "created_at": "2026-11-26T20:22:38.427Z",
}
AUTH_EXAMPLE: dict[str, Any] = {
    "user": USER_EXAMPLE,
    "access_token": (
        "eyJhbGciOiJFZERTQSIsImtpZCI6InVvUnZLUXY1TkZ0SWFteHZpTDZibE85M3JYbS1pQnprN1pycnk3VTVIdm8i"
        "LCJ0eXAiOiJKV1QifQ.eyJzdWIiOiI0YjdlMmMxYS05ZDNmLTRlOGEtYjZjNS0xZjJhM2I0YzVkNmUiLCJpYXQiOj"
        "E3OTU3MzUyMjAsImV4cCI6MTc5NTczODgyMCwiaXNzIjoidG9kby1hcGkiLCJhdWQiOiJ0b2RvLWFwaSIsInR5cCI6"
        "ImFjY2VzcyJ9.8VjAyyZUZA2K_aiTqkr6GoGCno0sMX4ObT47gD1TRSjfD000yDfIUT4An4M3biNU9pvoVktTF87A6"
        "KKmdLFQCA"
    ),
    "token_type": "bearer",
    "expires_in": 900,
    "refresh_token": "mJ4v0W2bq8s3ZyXnQe7rT1uKp9LdHf6aGc5oBxVi0Ew",
    "refresh_expires_in": 604800,
}
TASK_EXAMPLE: dict[str, Any] = {
    "id": "3f0c8a52-6d1e-4b7a-9c2f-8e5d4a3b2c1d",
    "user_id": USER_EXAMPLE["id"],
    "title": "Buy milk",
    "description": "Two litres, semi-skimmed",
    "completed": False,
    "completed_at": None,
    "priority": "high",
    "due_date": "2026-12-01",
    "created_at": "2026-11-26T20:22:38.427Z",
    "updated_at": "2026-11-26T20:22:38.427Z",
    "tags": ["errands"],
    "position": "a0",
    "version": 1,
}
COMPLETED_TASK_EXAMPLE: dict[str, Any] = {
    **TASK_EXAMPLE,
    "completed": True,
    "completed_at": "2026-11-27T08:15:02.113Z",
    "updated_at": "2026-11-27T08:15:02.113Z",
    "version": 2,
}
TASK_PAGE_EXAMPLE: dict[str, Any] = {
    "items": [TASK_EXAMPLE],
    "total": 41,
    "limit": 1,
    "offset": 0,
    "next_cursor": (
        "eyJ2IjoxLCJrIjoidGFza3MiLCJmIjp7fSwibCI6MSwibyI6MSwiYSI6IjIwMjYtMTEtMjZUMjA6MjI6"
        "MzguNDI3MDAwKzAwOjAwIiwiaSI6IjNmMGM4YTUyNmQxZTRiN2E5YzJmOGU1ZDRhM2IyYzFkIn0"
    ),
}
JWKS_EXAMPLE: dict[str, Any] = {
    "keys": [
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": "S8rWLaVJlPcii3kPyROS20yPlqASWZpWxX7TcZ6l8zw",
            "kid": "uoRvKQv5NFtIamxviL6blO93rXm-iBzk7Zrry7U5Hvo",
            "alg": "EdDSA",
            "use": "sig",
        }
    ]
}
