"""Text retention: when the question and answer texts of a collection may be erased.

A collection keeps its texts `text_retention_days` days (empty: KB_TEXT_RETENTION_DAYS;
0: for good), unless it is on legal hold, which keeps them whatever the days say. A
retention run turns this into `Cutoffs`: for each collection, the instant before which
its texts may go (None: they stay), and one for what names no collection or only
deleted ones. An audit row or an exchange that spans several collections loses its
texts only when every one of them lets it go (`Cutoffs.lets_go`).

The run's audit row carries its cutoffs, so `audit_verify` applies the very same rule
to each row whose texts that run erased (kb.audit).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from kb.models import AuditEvent, Collection

EXPIRE_ACTION = "retention.expire"


def _days_cutoff(now: datetime, days: int | None) -> datetime | None:
    return now - timedelta(days=days) if days else None


@dataclass(frozen=True)
class Cutoffs:
    collections: dict[str, datetime | None]
    default: datetime | None  # no collection named, or only deleted ones

    @classmethod
    def at(cls, now: datetime) -> "Cutoffs":
        """Each collection's cutoff at `now`, from its settings and the default."""
        default_days = settings.KB_TEXT_RETENTION_DAYS
        collections = {}
        for slug, days, hold in Collection.objects.values_list(
            "slug", "text_retention_days", "legal_hold"
        ):
            own = default_days if days is None else days
            collections[slug] = None if hold else _days_cutoff(now, own)
        return cls(collections, _days_cutoff(now, default_days))

    @property
    def latest(self) -> datetime | None:
        """Nothing written since this instant lets go (None: nothing does at all)."""
        cutoffs = [c for c in (*self.collections.values(), self.default) if c is not None]
        return max(cutoffs, default=None)

    def lets_go(self, slugs: Sequence[str], created_at: datetime) -> bool:
        cutoffs = [self.collections.get(slug, self.default) for slug in slugs] or [self.default]
        return all(c is not None and created_at < c for c in cutoffs)

    def as_detail(self) -> dict[str, Any]:
        def iso(cutoff: datetime | None) -> str | None:
            return cutoff.isoformat() if cutoff else None

        return {
            "cutoffs": {slug: iso(c) for slug, c in self.collections.items()},
            "default_cutoff": iso(self.default),
        }

    @classmethod
    def of_detail(cls, detail: dict[str, Any]) -> "Cutoffs":
        def parsed(cutoff: str | None) -> datetime | None:
            return datetime.fromisoformat(cutoff) if cutoff else None

        return cls(
            {slug: parsed(c) for slug, c in detail.get("cutoffs", {}).items()},
            parsed(detail.get("default_cutoff")),
        )


def row_collections(event: AuditEvent) -> list[str]:
    """The collections a row's texts belong to: those it names or, for a refused
    question that names none, those it asked for."""
    requested = event.detail.get("requested") if isinstance(event.detail, dict) else None
    return event.collections.split() or [str(s) for s in requested or []]
