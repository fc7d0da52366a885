"""Persistence: SQLAlchemy 2 entities and sessions."""
