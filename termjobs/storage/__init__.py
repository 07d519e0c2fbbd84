"""Persistence: SQLAlchemy Core tables, a synchronous store and an async gateway."""
