"""Alembic migrations, shipped inside the package so that `todo-api migrate` works anywhere.

`alembic_config()` builds the configuration in code (there is no alembic.ini to keep in step);
the environment is `env.py`, the revisions are in `versions/`.
"""

from alembic import command
from alembic.config import Config

FILE_TEMPLATE = "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "backend:migrations")
    config.set_main_option("file_template", FILE_TEMPLATE)
    # configparser interpolation: a literal % (in a password, say) is written %%.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    """Bring the database to the newest revision. Blocking: call it from a thread in async code."""
    command.upgrade(alembic_config(database_url), "head")
