"""SCIM 2.0 provisioning over scim2-server: what kb publishes, and the storage that
reads and writes it as Django users and groups through kb.directory.

scim2-server validates the requests, applies PATCH and PUT to the resource it reads
here, and answers; this module only maps resources to rows and back. The schemas
published are RFC 7643's User and Group cut down to what kb keeps, so a conformance
tester and an identity provider see exactly what round-trips.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any, cast

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    ETag,
    Filter,
    InvalidValueException,
    NotFoundException,
    Patch,
    Resource,
    ResourceType,
    ResponseParameters,
    Schema,
    ScimFilter,
    ScimPolicy,
    ScimProvider,
    SearchRequest,
    ServiceProviderConfig,
    Sort,
    UniquenessException,
)
from scim2_models.path import CompareOperator, Comparison
from scim2_server.handler import ScimHandler
from scim2_server.service import ScimService
from scim2_server.storage import ScimStorage, SearchPage
from scim2_server.utils import load_json_resource

from kb.directory import (
    SCIM_ACTOR,
    DirectoryConflict,
    UserFields,
    group_provision,
    group_remove,
    group_update,
    user_provision,
    user_remove,
    user_update,
)
from kb.models import ScimGroup, ScimUser

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
# The attributes kb keeps (and their sub-attributes); id, externalId and meta are common
# to every resource. A member's display is left out: Okta sends one, which is dropped,
# and kb could only answer the user's name, not what was sent.
KEPT = {
    USER_SCHEMA: {
        "userName": set(),
        "name": {"givenName", "familyName"},
        "emails": {"value", "type", "primary"},
        "active": set(),
    },
    GROUP_SCHEMA: {"displayName": set(), "members": {"value", "$ref", "type"}},
}
MAX_RESULTS = 200


def _schema(published: dict[str, Any]) -> Schema:
    kept = KEPT[published["id"]]
    attributes = []
    for attribute in published["attributes"]:
        if attribute["name"] not in kept:
            continue
        subs = [
            sub
            for sub in attribute.get("subAttributes", [])
            if sub["name"] in kept[attribute["name"]]
        ]
        attributes.append({**attribute, "subAttributes": subs} if subs else attribute)
    return Schema.model_validate({**published, "attributes": attributes})


@cache
def provider() -> ScimProvider:
    """RFC 7643's User (no enterprise extension) and Group, cut down to KEPT.

    The policy takes what Okta and Microsoft Entra send: attributes kb does not keep
    are dropped (a default Entra mapping sends title, addresses...), a `remove` may
    name its member in `value`, and `emails[type eq "work"].value` creates that entry.
    """
    schemas = [_schema(s) for s in load_json_resource("default-schemas.json") if s["id"] in KEPT]
    resource_types = [
        ResourceType.model_validate({**r, "schemaExtensions": None})
        for r in load_json_resource("default-resource-types.json")
    ]
    config = ServiceProviderConfig(
        documentation_uri=None,
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_RESULTS),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=False),
        etag=ETag(supported=False),
        authentication_schemes=[
            AuthenticationScheme(
                type=AuthenticationScheme.Type.oauthbearertoken,
                name="Bearer token",
                description="The token in kb's KB_SCIM_TOKEN setting.",
                primary=True,
            )
        ],
    )
    policy = ScimPolicy(
        unknown=ScimPolicy.Unknown.ignore,
        remove_value_as_filter=ScimPolicy.RemoveValue.apply,
        unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
    )
    return ScimProvider.from_discovery(schemas, resource_types, config, policy)


def _dropping_none(value: dict[str, Any]) -> dict[str, Any]:
    """`value` without its empty attributes, nested ones included (SCIM leaves them out)."""
    kept = {k: _dropping_none(v) if isinstance(v, dict) else v for k, v in value.items()}
    return {k: v for k, v in kept.items() if v not in (None, "", [], {})}


def _meta(row: ScimUser | ScimGroup, resource_type: str) -> dict[str, Any]:
    return {
        "resourceType": resource_type,
        "created": row.created_at,
        "lastModified": row.updated_at,
    }


def _emails(row: ScimUser) -> list[dict[str, Any]]:
    """The emails as provisioned, unless User.email was changed elsewhere since."""
    if UserFields(username="", emails=row.emails).email == row.user.email:
        return list(row.emails)
    return [{"value": row.user.email, "primary": True}] if row.user.email else []


def user_resource(row: ScimUser) -> dict[str, Any]:
    user = row.user
    return _dropping_none(
        {
            "schemas": [USER_SCHEMA],
            "id": row.scim_id,
            "externalId": row.external_id,
            "userName": user.username,
            "name": {"givenName": user.first_name, "familyName": user.last_name},
            "emails": _emails(row),
            "active": user.is_active,
            "meta": _meta(row, "User"),
        }
    )


def group_resource(row: ScimGroup) -> dict[str, Any]:
    members = ScimUser.objects.filter(user__groups=row.group).select_related("user")
    return _dropping_none(
        {
            "schemas": [GROUP_SCHEMA],
            "id": row.scim_id,
            "externalId": row.external_id,
            "displayName": row.group.name,
            "members": [
                {
                    "value": m.scim_id,
                    "$ref": f"Users/{m.scim_id}",
                    "type": "User",
                }
                for m in members.order_by("pk")
            ],
            "meta": _meta(row, "Group"),
        }
    )


def _user_fields(resource: Any, current: User | None) -> UserFields:
    name = resource.name
    emails = [
        _dropping_none({"value": e.value, "type": e.type, "primary": e.primary})
        for e in resource.emails or []
    ]
    active = resource.active
    if active is None:  # a PUT without it keeps what it was
        active = current.is_active if current is not None else True
    return UserFields(
        username=resource.user_name or "",
        first_name=(name.given_name or "") if name else "",
        last_name=(name.family_name or "") if name else "",
        emails=emails,
        active=active,
        external_id=resource.external_id or "",
    )


def _member_users(resource: Any) -> list[User]:
    members = resource.members or []
    if any(str(m.type or "User") != "User" for m in members):
        raise InvalidValueException(detail="kb groups hold users only, not other groups.")
    ids = {str(m.value) for m in members}
    rows = ScimUser.objects.filter(scim_id__in=ids).select_related("user")
    if missing := ids - {row.scim_id for row in rows}:
        raise InvalidValueException(detail=f"No provisioned user has the id {sorted(missing)[0]}.")
    return [row.user for row in rows]


@contextmanager
def _as_scim_errors() -> Iterator[None]:
    """kb.directory's refusals, as the SCIM errors a provider understands."""
    try:
        yield
    except DirectoryConflict as error:
        raise UniquenessException(detail=str(error)) from error
    except IntegrityError as error:  # the same name, created by a concurrent request
        raise UniquenessException(detail="The name was taken meanwhile.") from error
    except ValidationError as error:
        detail = "; ".join(
            f"{name}: {' '.join(messages)}" for name, messages in error.message_dict.items()
        )
        raise InvalidValueException(detail=detail) from error


# Equality on these narrows a search in the database before the filter itself runs.
INDEXED = {
    "User": {"user_name": "user__username__iexact", "external_id": "external_id", "id": "scim_id"},
    "Group": {"display_name": "group__name__iexact", "external_id": "external_id", "id": "scim_id"},
}


class DjangoStorage(ScimStorage):
    """SCIM users and groups as Django users and groups, through kb.directory."""

    def _model(self, resource_type: ResourceType) -> type[Resource[Any]]:
        return cast(type[Resource[Any]], provider().model_for(resource_type))

    def _rows(self, resource_type: ResourceType) -> QuerySet[Any]:
        if resource_type.name == "User":
            return ScimUser.objects.select_related("user").order_by("pk")
        return ScimGroup.objects.select_related("group").order_by("pk")

    def _row(self, resource_type: ResourceType, resource_id: str | None) -> Any:
        row = self._rows(resource_type).filter(scim_id=resource_id).first()
        if row is None:
            raise NotFoundException(detail=f"{resource_type.name} {resource_id!r} not found")
        return row

    def _resource(self, resource_type: ResourceType, row: Any) -> Resource[Any]:
        data = user_resource(row) if resource_type.name == "User" else group_resource(row)
        return self._model(resource_type).model_validate(data)

    def operation(self) -> Any:
        return transaction.atomic()

    def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        return self._resource(resource_type, self._row(resource_type, resource_id))

    def _narrowed(self, resource_type: ResourceType, scim_filter: ScimFilter[Any] | None) -> Any:
        rows = self._rows(resource_type)
        node = scim_filter.ast if scim_filter is not None else None
        if not isinstance(node, Comparison) or node.op != CompareOperator.eq:
            return rows
        binding = cast(ScimFilter[Any], scim_filter).resolve_comparison(
            node.attr_path, strict=False
        )
        if binding is None or binding.sub_field_name or not isinstance(node.value, str):
            return rows
        lookup = INDEXED[str(resource_type.name)].get(binding.field_name)
        if lookup is None:
            return rows
        return rows.filter(**{lookup: node.value})

    def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        """One resource type without a filter pages in the database; a filter runs on
        the rows an indexed equality narrows to (all of them otherwise)."""
        start = search_request.start_index_0 or 0
        stop = None if search_request.count is None else start + search_request.count
        scim_filter = search_request.filter
        if scim_filter is None and len(resource_types) == 1:
            rows = self._rows(resource_types[0])
            page = [self._resource(resource_types[0], row) for row in rows[start:stop]]
            return SearchPage(total=rows.count(), resources=page)
        alone = len(resource_types) == 1  # at the root, both types: no narrowing
        found = [
            resource
            for resource_type in resource_types
            for resource in self._matching(resource_type, scim_filter, alone=alone)
        ]
        return SearchPage(total=len(found), resources=found[start:stop])

    def _matching(
        self, resource_type: ResourceType, scim_filter: ScimFilter[Any] | None, *, alone: bool
    ) -> Iterator[Resource[Any]]:
        rows = self._narrowed(resource_type, scim_filter) if alone else self._rows(resource_type)
        for row in rows.iterator(chunk_size=500):
            resource = self._resource(resource_type, row)
            if scim_filter is None or scim_filter.match(resource):
                yield resource

    def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        with _as_scim_errors():
            row: ScimUser | ScimGroup
            if resource_type.name == "User":
                row = user_provision(fields=_user_fields(resource, None), actor=SCIM_ACTOR)
            else:
                row = group_provision(
                    name=getattr(resource, "display_name", None) or "",
                    external_id=resource.external_id or "",
                    members=_member_users(resource),
                    actor=SCIM_ACTOR,
                )
        return self._resource(resource_type, row)

    def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> Resource[Any]:
        row = self._row(resource_type, resource.id)
        with _as_scim_errors():
            if resource_type.name == "User":
                user_update(
                    scim_user=row, fields=_user_fields(resource, row.user), actor=SCIM_ACTOR
                )
            else:
                group_update(
                    scim_group=row,
                    name=getattr(resource, "display_name", None) or "",
                    external_id=resource.external_id or "",
                    members=_member_users(resource),
                    actor=SCIM_ACTOR,
                )
        return self._resource(resource_type, self._row(resource_type, resource.id))

    def delete(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        expected_version: str | None = None,
    ) -> None:
        row = self._row(resource_type, resource_id)
        if resource_type.name == "User":
            user_remove(scim_user=row, actor=SCIM_ACTOR)
        else:
            group_remove(scim_group=row, actor=SCIM_ACTOR)


@cache
def handler() -> ScimHandler:
    return ScimHandler(ScimService(provider()), DjangoStorage())


def error_body(status: int, detail: str) -> bytes:
    """A SCIM error (RFC 7644 §3.12), for answers given before the handler runs."""
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": str(status)}
    return json.dumps({**body, "detail": detail}).encode()
