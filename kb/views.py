"""Pages: log in, members and settings of a collection, one's API tokens."""

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from kb import login_limit, request_context, services, sso
from kb.audit import anonymous, audit_record
from kb.forms import CollectionSettingsForm, MemberForm, TokenForm
from kb.models import ApiToken, Membership, Outcome, Role, TokenScope
from kb.principal import session_principal
from kb.selectors import collection_get, readable_collections


class LoginView(auth_views.LoginView):
    """Django's login, rate limited per user name and per address; failures are audited
    (kb.apps), and so is a refused attempt."""

    template_name = "kb/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return super().get_context_data(**kwargs) | sso.sso_context()

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = request.POST.get("username", "")
        if not sso.password_login_allowed(username):
            # Single sign-on only; the password is not even checked (kb.sso.PasswordBackend
            # would refuse it too).
            audit_record(
                action="auth.login_refused",
                actor=anonymous(username),
                outcome=Outcome.DENIED,
                detail={"method": "password", "reason": "password_login_off"},
            )
            form = self.get_form_class()(self.request, initial={"username": username})
            refusal = "Password login is off: log in with single sign-on."
            context = self.get_context_data(form=form, refusal=refusal)
            return self.render_to_response(context, status=403)
        if login_limit.login_blocked(request_context.current().client_ip, username):
            audit_record(
                action="auth.login_throttled", actor=anonymous(username), outcome=Outcome.DENIED
            )
            # An unbound form: validating it would check the password, which is what is
            # throttled, and a wrong one would write a second row (auth.login_failed).
            form = self.get_form_class()(self.request, initial={"username": username})
            refusal = "Too many failed attempts. Wait a few minutes and try again."
            context = self.get_context_data(form=form, refusal=refusal)
            return self.render_to_response(context, status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: Any) -> HttpResponse:
        login_limit.login_failed(
            request_context.current().client_ip, self.request.POST.get("username", "")
        )
        return super().form_invalid(form)

    def form_valid(self, form: Any) -> HttpResponse:
        login_limit.login_succeeded(form.get_user().get_username())
        response = super().form_valid(form)
        audit_record(action="auth.login", actor=session_principal(self.request))
        return response


def _owned(request: HttpRequest, slug: str) -> Any:
    collection, _ = collection_get(session_principal(request), slug, role=Role.OWNER)
    return collection


@login_required
def members(request: HttpRequest, slug: str) -> HttpResponse:
    principal = session_principal(request)
    collection = _owned(request, slug)
    form = MemberForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        user = group = None
        if data["kind"] == "user":
            user = User.objects.filter(username=data["name"]).first()
        else:
            group = Group.objects.filter(name=data["name"]).first()
        if user is None and group is None:
            form.add_error("name", f"There is no {data['kind']} called {data['name']}.")
        else:
            services.member_add(
                collection=collection,
                role=Role(data["role"]),
                actor=principal,
                user=user,
                group=group,
            )
            messages.success(request, f"{data['name']} is now {Role(data['role']).label}.")
            return redirect("members", slug)
    memberships = Membership.objects.filter(collection=collection).select_related("user", "group")
    return render(
        request,
        "kb/members.html",
        {"collection": collection, "memberships": memberships, "form": form, "roles": Role},
    )


@login_required
@require_POST
def member_remove(request: HttpRequest, slug: str, membership_id: int) -> HttpResponse:
    collection = _owned(request, slug)
    membership = Membership.objects.filter(pk=membership_id, collection=collection).first()
    if membership is None:
        raise Http404
    services.member_remove(
        collection=collection,
        actor=session_principal(request),
        user=membership.user,
        group=membership.group,
    )
    messages.success(request, f"{membership.user or membership.group} was removed.")
    return redirect("members", slug)


@login_required
def collection_settings(request: HttpRequest, slug: str) -> HttpResponse:
    collection = _owned(request, slug)
    principal = session_principal(request)
    form = CollectionSettingsForm(
        request.POST or None, instance=collection, admin=principal.is_admin
    )
    if request.method == "POST" and form.is_valid():
        changes = {name: form.cleaned_data[name] for name in form.changed_data}
        collection.refresh_from_db()
        if changes:
            services.collection_update(collection=collection, actor=principal, **changes)
        messages.success(request, "Settings saved.")
        return redirect("collection-settings", slug)
    return render(request, "kb/settings.html", {"collection": collection, "form": form})


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    principal = session_principal(request)
    readable = {c.slug: c for c, _ in readable_collections(principal)}
    choices = [(slug, c.name) for slug, c in readable.items()]
    form = TokenForm(request.POST or None, choices=choices)
    secret = ""
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        days = data["expires_in_days"]
        try:
            _, secret = services.token_create(
                user=principal.user,
                collections=[readable[s] for s in data["collections"]],
                scope=TokenScope(data["scope"]),
                actor=principal,
                name=data["name"],
                expires_at=timezone.now() + timedelta(days=days) if days else None,
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            form = TokenForm(choices=choices)
    own = ApiToken.objects.filter(user=principal.user).prefetch_related("collections")
    response = render(
        request,
        "kb/tokens.html",
        {"form": form, "tokens": own, "secret": secret, "now": timezone.now()},
    )
    response["Cache-Control"] = "no-store"  # the secret is shown once, never cached
    return response


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    principal = session_principal(request)
    token = ApiToken.objects.filter(pk=token_id, user=principal.user).first()
    if token is None:
        raise Http404
    services.token_revoke(token=token, actor=principal)
    messages.success(request, f"Token kb_{token.prefix}_… is revoked.")
    return redirect("tokens")
