"""Tickets, history, reply queue, post log and counters.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ticket_id", sa.String(32), nullable=False),
        sa.Column("tweet_id", sa.String(32), nullable=False),
        sa.Column("author_username", sa.String(64)),
        sa.Column("tweet_text", sa.Text),
        sa.Column("tweet_created_at", sa.String(40)),
        sa.Column("mentions", sa.JSON),
        sa.Column("category", sa.String(64)),
        sa.Column("sentiment", sa.String(16)),
        sa.Column("sentiment_score", sa.Float),
        sa.Column("priority", sa.String(16)),
        sa.Column("entities", sa.JSON),
        sa.Column("model_version", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reply_text", sa.Text),
        sa.Column("reply_state", sa.String(16), nullable=False),
        sa.Column("reply_note", sa.Text),
        sa.Column("reply_tweet_id", sa.String(32)),
        sa.Column("replied_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("ticket_id", name="uq_tickets_ticket_id"),
        sa.UniqueConstraint("tweet_id", name="uq_tickets_tweet_id"),
        sa.CheckConstraint("status IN ('open', 'in_progress', 'resolved', 'closed')", name="ck_tickets_status"),
        sa.CheckConstraint(
            "reply_state IN ('pending', 'approved', 'posted', 'skipped')", name="ck_tickets_reply_state"
        ),
    )
    for column in ("category", "sentiment", "priority", "status", "reply_state", "created_at"):
        op.create_index(f"ix_tickets_{column}", "tickets", [column])
    op.create_table(
        "ticket_history",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ticket_pk", sa.Integer, sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_ticket_history_ticket_pk", "ticket_history", ["ticket_pk"])
    op.create_table(
        "reply_queue",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tweet_id", sa.String(32), nullable=False),
        sa.Column("ticket_pk", sa.Integer, sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("available_at", sa.DateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("in_flight_at", sa.DateTime),
        sa.Column("last_error", sa.Text),
        sa.Column("enqueued_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("tweet_id", name="uq_reply_queue_tweet_id"),
    )
    op.create_index("ix_reply_queue_available_at", "reply_queue", ["available_at"])
    op.create_table(
        "post_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tweet_id", sa.String(32), nullable=False),
        sa.Column("reply_tweet_id", sa.String(32), nullable=False),
        sa.Column("posted_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("tweet_id", name="uq_post_log_tweet_id"),
    )
    op.create_index("ix_post_log_posted_at", "post_log", ["posted_at"])
    op.create_table(
        "counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    for table in ("counters", "post_log", "reply_queue", "ticket_history", "tickets"):
        op.drop_table(table)
