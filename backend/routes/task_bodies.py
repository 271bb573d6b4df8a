"""The request bodies of the task routes, with their OpenAPI examples."""

from typing import Annotated

from fastapi import Body

from backend.openapi import body_examples
from backend.schemas import CompleteRequest, TaskCreate, TaskPatch, TaskReplace

TaskCreateBody = Annotated[
    TaskCreate,
    Body(
        openapi_examples=body_examples(
            full=(
                "A task with every field",
                {
                    "title": "Buy milk",
                    "description": "Two litres, semi-skimmed",
                    "completed": False,
                    "priority": "high",
                    "due_date": "2026-12-01",
                    "tags": ["errands", "home"],
                },
            ),
            minimal=("Only a title", {"title": "Call the plumber"}),
        )
    ),
]
TaskReplaceBody = Annotated[
    TaskReplace,
    Body(
        openapi_examples=body_examples(
            replace=(
                "Every writable field",
                {
                    "title": "Buy oat milk",
                    "description": None,
                    "completed": True,
                    "priority": "medium",
                    "due_date": None,
                    "tags": ["errands"],
                },
            )
        )
    ),
]
TaskPatchBody = Annotated[
    TaskPatch,
    Body(
        openapi_examples=body_examples(
            due=("Set one field", {"due_date": "2026-12-24"}),
            clear=("Clear a field", {"description": None}),
            several=("Several fields", {"title": "Buy oat milk", "priority": "high"}),
            tags=("Replace the tags", {"tags": ["work", "urgent"]}),
        )
    ),
]
CompleteBody = Annotated[
    CompleteRequest | None,
    Body(
        description="Leave the body out to toggle; send {completed: bool} to set.",
        openapi_examples=body_examples(
            complete=("Mark the task completed", {"completed": True}),
            reopen=("Reopen the task", {"completed": False}),
        ),
    ),
]
