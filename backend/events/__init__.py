"""Live updates: the per-worker fan-out of task changes to open event streams (`hub.py`), the
buses that carry them between workers (`buses.py`), and one stream's events (`stream.py`)."""

from backend.events.hub import Hub, Stream
from backend.events.stream import STREAM_HEADERS, EventStreamResponse, events

__all__ = ["STREAM_HEADERS", "EventStreamResponse", "Hub", "Stream", "events"]
