"""locker_banks: the bank's contract dialect (DESIGN section 3.1); existing banks -> seed

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("locker_banks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("dialect", sa.String(length=16), nullable=False, server_default="seed")
        )
        batch_op.add_column(
            sa.Column(
                "dialect_setting", sa.String(length=16), nullable=False, server_default="seed"
            )
        )
        batch_op.add_column(sa.Column("detected_dialect", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("locker_banks", schema=None) as batch_op:
        batch_op.drop_column("detected_dialect")
        batch_op.drop_column("dialect_setting")
        batch_op.drop_column("dialect")
