"""SCIM at directory size: lookups and deactivations among 10,000 provisioned users.

    python bench/scim.py [--users 10000] [--repeat 30]

Users are provisioned through kb.directory (as POST /Users does, audit rows included),
each with a live session, plus an API token for the users deactivated. Every request
then goes through Django's full stack in this process, as an identity provider sends it:
`userName eq` (what Okta and Entra send before each create: narrowed in the database), a
filter no index narrows (every user read and matched: the worst case), a read by id,
and a PATCH `active: "False"` (sessions ended, tokens revoked, audited).
"""

import argparse
import json
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import kb_setup, save

TOKEN = "bench-scim-token-" + "x" * 32
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def timed(call: Any, repeat: int) -> list[float]:
    samples = []
    for i in range(repeat):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 1),
        "max_ms": round(ordered[-1], 1),
    }


def provision(count: int) -> list[tuple[str, str]]:
    """`count` SCIM users, each with a live session: [(userName, SCIM id)]."""
    from django.utils import timezone

    from kb.directory import SCIM_ACTOR, UserFields, user_provision
    from kb.models import UserSession
    from kb.sessions import SessionStore

    users = []
    for n in range(count):
        name = f"user{n:05d}@example.com"
        fields = UserFields(
            username=name,
            first_name=f"First{n}",
            last_name=f"Last{n}",
            emails=[{"value": name, "type": "work", "primary": True}],
            external_id=f"ext-{n}",
        )
        row = user_provision(fields=fields, actor=SCIM_ACTOR)
        users.append((name, row.scim_id, row.user.pk))
    expiry = timezone.now() + timedelta(days=14)
    store = SessionStore()
    UserSession.objects.bulk_create(
        [
            UserSession(
                session_key=f"bench{pk:027d}",
                session_data=store.encode({"_auth_user_id": str(pk)}),
                expire_date=expiry,
                user_id=pk,
            )
            for _, _, pk in users
        ],
        batch_size=1000,
    )
    return [(name, scim_id) for name, scim_id, _ in users]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    kb_setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client
    from django.test.utils import setup_test_environment

    from kb.audit import SYSTEM
    from kb.models import ApiToken, Role, TokenScope
    from kb.services import collection_create, member_add, token_create

    setup_test_environment()  # allows the test client's "testserver" host
    settings.KB_SCIM_TOKEN = TOKEN
    started = time.perf_counter()
    users = provision(args.users)
    provision_s = time.perf_counter() - started
    client = Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    rng = random.Random(7)

    def lookup(_: int) -> None:
        name, scim_id = rng.choice(users)
        found = client.get("/scim/v2/Users", {"filter": f'userName eq "{name.upper()}"'})
        assert [r["id"] for r in found.json()["Resources"]] == [scim_id]

    def read(_: int) -> None:
        assert client.get(f"/scim/v2/Users/{rng.choice(users)[1]}").status_code == 200

    def full_scan(_: int) -> None:
        name = rng.choice(users)[0]
        found = client.get("/scim/v2/Users", {"filter": f'emails.value eq "{name}"'})
        assert found.json()["totalResults"] == 1

    hr = collection_create(slug="hr", name="HR", actor=SYSTEM)[0]
    victims = rng.sample(users, args.repeat)
    for name, _ in victims:
        user = User.objects.get(username=name)
        member_add(collection=hr, user=user, role=Role.READER, actor=SYSTEM)
        token_create(user=user, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)

    def deactivate(i: int) -> None:
        operation = {"op": "Replace", "path": "active", "value": "False"}
        response = client.patch(
            f"/scim/v2/Users/{victims[i][1]}",
            json.dumps({"schemas": [PATCH], "Operations": [operation]}),
            content_type="application/scim+json",
        )
        assert response.status_code in (200, 204), response.content

    lookup(0)  # warm-up
    results = {
        "lookup userName eq": summary(timed(lookup, args.repeat)),
        "read by id": summary(timed(read, args.repeat)),
        "filter without index (full scan)": summary(timed(full_scan, max(3, args.repeat // 10))),
        "deactivate (PATCH active False)": summary(timed(deactivate, args.repeat)),
    }
    assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 0
    width = max(map(len, results))
    print(f"{'request':<{width}}  {'p50 ms':>8}  {'p95 ms':>8}  {'max ms':>8}")
    for name, row in results.items():
        cells = "  ".join(f"{row[key]:>8.1f}" for key in ("p50_ms", "p95_ms", "max_ms"))
        print(f"{name:<{width}}  {cells}")
    report = {
        "users": args.users,
        "sessions": args.users,
        "repeat": args.repeat,
        "provision_s": round(provision_s, 1),
        "requests": results,
    }
    save("scim", report)
    print(
        f"scim users={args.users} lookup_p50_ms={results['lookup userName eq']['p50_ms']} "
        f"full_scan_ms={results['filter without index (full scan)']['p50_ms']:.0f} "
        f"deactivate_p50_ms={results['deactivate (PATCH active False)']['p50_ms']:.0f}"
    )


if __name__ == "__main__":
    main()
