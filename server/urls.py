from django.contrib import admin
from django.urls import include, path
from mozilla_django_oidc.views import OIDCLogoutView

from kb import scim_views, sso, views
from server import console, monitoring
from server.api import api, openai_api

urlpatterns = [
    path("healthz", monitoring.health, name="health"),
    path("readyz", monitoring.readiness, name="ready"),
    path("metrics", monitoring.metrics_view, name="metrics"),
    # One login page for everyone, the rate-limited one (the admin's included).
    path("login/", views.LoginView.as_view(), name="login"),
    path("admin/login/", views.LoginView.as_view()),
    # Logging out also ends the identity provider's session after a single sign-on login.
    path("logout/", OIDCLogoutView.as_view(), name="logout"),
    # Single sign-on (kb.sso): 404 while OIDC_ISSUER is unset.
    path("oidc/authenticate/", sso.AuthenticateView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", sso.CallbackView.as_view(), name="oidc_authentication_callback"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("v1/", openai_api.urls),
    path("scim/v2", scim_views.scim),
    path("scim/v2/<path:path>", scim_views.scim),
    path("audit/", console.audit, name="audit"),
    path("audit/export", console.audit_download, name="audit-export"),
    path("audit/<id:seq>", console.audit_event, name="audit-event"),
    path("status/", console.system_status, name="status"),
    path("", include("kb.urls")),
    path("", include("ingest.urls")),
    path("", include("retrieval.urls")),
]
