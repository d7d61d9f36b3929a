"""gold-standard images: known answers per task, the gold source per job

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 22:10:00

``tasks.gold`` holds the known answers of a gold-standard image (NULL for every ordinary image, so
existing rows need no conversion); ``jobs.gold_uri`` says where they came from.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gold', sa.JSON(), nullable=True))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gold_uri', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('gold_uri')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('gold')
