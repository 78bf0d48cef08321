"""Alembic's environment and revisions; installed, the package robin._migrations (see setup.py)."""
