"""Alembic migrations of the labeling database (run by :func:`dicomlab_labeling.workflow.migrate.upgrade`)."""
