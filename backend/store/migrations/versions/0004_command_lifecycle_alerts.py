"""command lifecycle and alerts: in-doubt and origin of commands, clock offsets, alerts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("command_transactions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("in_doubt", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("requested_from", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
    with op.batch_alter_table("bank_liveness", schema=None) as batch_op:
        batch_op.add_column(sa.Column("clock_offset_seconds", sa.Float(), nullable=True))
    op.create_table(
        "alerts",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("bank_uuid", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("transaction_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolves_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("ack_note", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    )
    op.create_index("ix_alerts_bank_kind", "alerts", ["bank_uuid", "kind"], unique=False)
    op.create_index("ix_alerts_resolves_at", "alerts", ["resolves_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_alerts_resolves_at", table_name="alerts")
    op.drop_index("ix_alerts_bank_kind", table_name="alerts")
    op.drop_table("alerts")
    with op.batch_alter_table("bank_liveness", schema=None) as batch_op:
        batch_op.drop_column("clock_offset_seconds")
    with op.batch_alter_table("command_transactions", schema=None) as batch_op:
        batch_op.drop_column("requested_from")
        batch_op.drop_column("in_doubt")
