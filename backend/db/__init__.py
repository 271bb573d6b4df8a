"""The database: one async engine per process, units of work that are the only place that
commits, and a fast path for the hot statements.

- `engine.py`: the engine and its pragmas, SQLite's writer queue, PostgreSQL's idle pings;
- `unit.py`: `Database`, the units of work (`UnitOfWork`, and the `Work` services run their
  statements on) and the turns in which they take pooled connections;
- `fastpath.py`: `fetch_all` and `execute`, on the driver directly where they may.
"""

from backend.db.fastpath import execute, fetch_all, translate_driver_error
from backend.db.unit import READ_ONLY_METHODS, Database, SecondStatement, UnitOfWork, Work

__all__ = [
    "READ_ONLY_METHODS",
    "Database",
    "SecondStatement",
    "UnitOfWork",
    "Work",
    "execute",
    "fetch_all",
    "translate_driver_error",
]
