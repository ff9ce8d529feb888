"""Alembic environment: run by :func:`sparktweet.store.upgrade_schema` with a live connection.

There is no alembic.ini: the store passes its connection in ``config.attributes``. For
``alembic`` on the command line, set ``SPARKTWEET_DB_URL`` and use ``-x`` nothing else.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from sparktweet.store import Base, url_from_config

target_metadata = Base.metadata
config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(
        {"sqlalchemy.url": url_from_config(None)}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
