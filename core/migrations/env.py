"""Alembic environment: runs migrations on the connection core.db hands over."""

from alembic import context

from core.db import Base

config = context.config
connection = config.attributes.get("connection")
target_metadata = Base.metadata

if connection is None:
    from sqlalchemy import create_engine

    connection = create_engine(config.get_main_option("sqlalchemy.url")).connect()

context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
