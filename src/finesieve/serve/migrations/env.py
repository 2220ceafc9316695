"""Alembic environment for the moderation service's database (run by `finesieve.serve.db.upgrade`).

The caller passes an open connection in `config.attributes["connection"]`; without one (the `alembic` command
line with `-x url=...` or sqlalchemy.url set) an engine is made from the URL.
"""

from alembic import context
from sqlalchemy import create_engine

from finesieve.serve.db import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    run_migrations(config.attributes["connection"])
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    with create_engine(url).begin() as connection:
        run_migrations(connection)
