"""a job's default finding state: "not looked at" or "absent"

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 00:10:00

``jobs.default_finding_state`` is the state every finding starts in for the job's readers (see
:mod:`dicomlab_labeling.workflow.finding_defaults`). Jobs that exist already get ``absent`` (the server default):
their readers go on as they started. New jobs get ``not-looked-at`` unless the admin chooses otherwise.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('default_finding_state', sa.String(length=16), nullable=False,
                                      server_default='absent'))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('default_finding_state')
