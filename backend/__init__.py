"""The Todo API: an async, multi-user Todo REST service."""
