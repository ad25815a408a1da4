"""Alembic environment: runs migrations on the connection core.db hands over."""

from alembic import context
from sqlalchemy import create_engine

from core.db import Base
from core.errors import StateError

config = context.config
connection = config.attributes.get("connection")
target_metadata = Base.metadata

if connection is None:  # the alembic command line, run by hand: it names the database itself
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise StateError("alembic: no sqlalchemy.url to migrate (werne migrates through core.db.migrate)")
    connection = create_engine(url).connect()

context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
