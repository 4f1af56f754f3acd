"""Persistence of decisions and source history (SQLite by default)."""
