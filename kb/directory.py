"""Writes for the people and groups an identity provider provisions (kb.scim), and the
deactivation every path shares (SCIM, the admin): it ends the user's sessions and
revokes their API tokens in the same transaction as its audit row."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from kb.audit import Actor, audit_record
from kb.models import ApiToken, Membership, ScimGroup, ScimUser, UserSession
from kb.principal import Principal
from kb.services import token_revoke

# Who acts for the identity provider in the audit trail: the holder of KB_SCIM_TOKEN.
SCIM_ACTOR = Actor(type="scim", id=None, name="scim")


class DirectoryConflict(Exception):
    """A user name or group name another user or group holds already."""


@dataclass(frozen=True)
class UserFields:
    """What an identity provider says about a person."""

    username: str
    first_name: str = ""
    last_name: str = ""
    # [{"value", "type", "primary"}]: the primary one (or else the first) is User.email.
    emails: list[dict[str, Any]] = field(default_factory=list)
    active: bool = True
    external_id: str = ""

    @property
    def email(self) -> str:
        primary = [e for e in self.emails if e.get("primary")] or self.emails
        return str(primary[0].get("value") or "") if primary else ""


def _sessions_end(user: User) -> int:
    """Delete every session of `user`; returns how many were live."""
    sessions = UserSession.objects.filter(user_id=user.pk)
    live = sessions.filter(expire_date__gt=timezone.now()).count()
    sessions.delete()
    return live


def user_deactivate(*, user: User, actor: Actor | Principal) -> None:
    """Turn the user off at once: no login, no session, no live token. Each revoked
    token gets its `token.revoke` row, the whole its `user.deactivate` row."""
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(is_active=False)
        user.is_active = False
        live = ApiToken.objects.filter(user=user, revoked_at__isnull=True)
        revoked = [token.prefix for token in live if token_revoke(token=token, actor=actor)]
        ended = _sessions_end(user)
        audit_record(
            action="user.deactivate",
            actor=actor,
            detail={"user": user.username, "tokens_revoked": revoked, "sessions_ended": ended},
        )


def user_activate(*, user: User, actor: Actor | Principal) -> None:
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(is_active=True)
        user.is_active = True
        audit_record(action="user.activate", actor=actor, detail={"user": user.username})


def _refuse_taken(rows: "QuerySet[Any]", *, other_than: User | Group | None, what: str) -> None:
    """Names are unique regardless of case, as SCIM compares userName."""
    if other_than is not None:
        rows = rows.exclude(pk=other_than.pk)
    if rows.exists():
        raise DirectoryConflict(f"The {what} is taken.")


def _username_taken(username: str, *, other_than: User | None = None) -> None:
    taken = User.objects.filter(username__iexact=username)
    _refuse_taken(taken, other_than=other_than, what=f"user name {username!r}")


def _apply(user: User, fields: UserFields) -> list[str]:
    """Copy `fields` onto `user` (unsaved); returns the names of those that changed."""
    values = {
        "username": fields.username,
        "first_name": fields.first_name,
        "last_name": fields.last_name,
        "email": fields.email,
    }
    changed = [name for name, value in values.items() if getattr(user, name) != value]
    for name in changed:
        setattr(user, name, values[name])
    user.full_clean(exclude=["password"])
    return changed


def user_provision(*, fields: UserFields, actor: Actor) -> ScimUser:
    """A new user, with no password: they sign in through the identity provider."""
    with transaction.atomic():
        _username_taken(fields.username)
        user = User(is_active=fields.active)
        _apply(user, fields)
        user.set_unusable_password()
        user.save()
        scim_user = ScimUser.objects.create(
            user=user, external_id=fields.external_id, emails=fields.emails
        )
        audit_record(
            action="user.create",
            actor=actor,
            detail={"user": user.username, "active": user.is_active, "via": "scim"},
        )
    return scim_user


def user_update(*, scim_user: ScimUser, fields: UserFields, actor: Actor) -> ScimUser:
    """Replace what the provider says about the user; turning `active` off deactivates."""
    user = scim_user.user
    with transaction.atomic():
        _username_taken(fields.username, other_than=user)
        before = user.username
        changed = _apply(user, fields)
        if changed:
            user.save(update_fields=changed)
        if (scim_user.external_id, scim_user.emails) != (fields.external_id, fields.emails):
            changed.append("scim")
        scim_user.external_id = fields.external_id
        scim_user.emails = fields.emails
        scim_user.save()
        if changed:
            audit_record(
                action="user.update",
                actor=actor,
                detail={"user": before, "changed": sorted(changed), "via": "scim"},
            )
        if user.is_active and not fields.active:
            user_deactivate(user=user, actor=actor)
        elif fields.active and not user.is_active:
            user_activate(user=user, actor=actor)
    return scim_user


def user_remove(*, scim_user: ScimUser, actor: Actor) -> None:
    """Deactivate (sessions, tokens), then delete the user and what is theirs alone."""
    user = scim_user.user
    with transaction.atomic():
        user_deactivate(user=user, actor=actor)
        audit_record(action="user.delete", actor=actor, detail={"user": user.username})
        user.delete()


def _group_name_taken(name: str, *, other_than: Group | None = None) -> None:
    taken = Group.objects.filter(name__iexact=name)
    _refuse_taken(taken, other_than=other_than, what=f"group name {name!r}")


def _group_members_set(group: Group, members: Iterable[User]) -> dict[str, Any]:
    """Make the provisioned members of `group` exactly `members`; members added by hand
    (users without a SCIM row) stay. Returns the audit detail of the change."""
    wanted = {user.pk: user for user in members}
    current = {user.pk: user for user in group.user_set.filter(scim__isnull=False)}
    added = [wanted[pk] for pk in wanted.keys() - current.keys()]
    removed = [current[pk] for pk in current.keys() - wanted.keys()]
    group.user_set.add(*added)
    group.user_set.remove(*removed)
    return {
        "added": sorted(user.username for user in added),
        "removed": sorted(user.username for user in removed),
    }


def _collections_of(group: Group) -> list[str]:
    return list(Membership.objects.filter(group=group).values_list("collection__slug", flat=True))


def group_provision(
    *, name: str, external_id: str, members: Sequence[User], actor: Actor
) -> ScimGroup:
    with transaction.atomic():
        _group_name_taken(name)
        group = Group(name=name)
        group.full_clean()
        group.save()
        scim_group = ScimGroup.objects.create(group=group, external_id=external_id)
        change = _group_members_set(group, members)
        audit_record(
            action="group.create", actor=actor, detail={"group": name, **change, "via": "scim"}
        )
    return scim_group


def group_update(
    *, scim_group: ScimGroup, name: str, external_id: str, members: Sequence[User], actor: Actor
) -> ScimGroup:
    """Rename the group and set its members; roles it holds on collections stay."""
    group = scim_group.group
    with transaction.atomic():
        _group_name_taken(name, other_than=group)
        before = group.name
        renamed = group.name != name
        if renamed:
            group.name = name
            group.full_clean()
            group.save(update_fields=["name"])
        scim_group.external_id = external_id
        scim_group.save()
        change = _group_members_set(group, members)
        if renamed or change["added"] or change["removed"]:
            audit_record(
                action="group.update",
                actor=actor,
                collections=_collections_of(group),
                detail={"group": before, "name": name, **change, "via": "scim"},
            )
    return scim_group


def group_remove(*, scim_group: ScimGroup, actor: Actor) -> None:
    """Delete the group, and with it the roles it held on collections."""
    group = scim_group.group
    with transaction.atomic():
        audit_record(
            action="group.delete",
            actor=actor,
            collections=_collections_of(group),
            detail={"group": group.name, "via": "scim"},
        )
        group.delete()
