"""AI assistance: a per-job mode, the reader's first answer per assignment, what each submission saw

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 22:30:00

``jobs.ai_assistance`` is ``off`` for every existing job (the server default), so existing rows need
no conversion; ``assignments.first_answer``/``first_answer_at`` and ``submissions.assistance`` are
NULL where no assistance was involved. The model's predictions themselves need no column: they are
part of ``tasks.manifest_line`` (the manifest line is stored whole).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ai_assistance', sa.String(length=24), nullable=False, server_default='off'))
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('first_answer', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('first_answer_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assistance', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_column('assistance')
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.drop_column('first_answer_at')
        batch_op.drop_column('first_answer')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('ai_assistance')
