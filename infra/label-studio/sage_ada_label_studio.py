"""Label Studio's own settings, plus one page (sign-up says that it is by invitation only) and
one exception to its SSRF protection (the addresses the operator trusts, and nothing else).

infra/label-studio/server.sh starts Label Studio with DJANGO_SETTINGS_MODULE naming this module
(and this folder on PYTHONPATH). With sign-up closed but to the organisation's invite link
(LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK, server.sh's default), Label Studio 1.23 still shows
its full sign-up form at /user/signup and, only once the form is filled in and sent, a bare 403
("Uh oh, this is not permitted.") that does not say why; no setting of its own changes that.
Here /user/signup without a valid invite token answers at once, GET or POST, with a page that
says sign-up is by invitation and how to get an account. The invite link itself
(/user/signup/?token=<the organisation's token>) reaches Label Studio's form unchanged, and with
sign-up open (the setting false) nothing here runs.
"""
import os

# Label Studio's settings read Django's settings while they load (Sentry's set-up does); that
# read must find Label Studio's own module, as it does when that module is the settings module.
os.environ["DJANGO_SETTINGS_MODULE"] = "label_studio.core.settings.label_studio"
try:
    from label_studio.core.settings.label_studio import *  # noqa: E402,F401,F403
    from label_studio.core.settings.label_studio import MIDDLEWARE  # noqa: E402
finally:
    os.environ["DJANGO_SETTINGS_MODULE"] = __name__

MIDDLEWARE = [*MIDDLEWARE, "sage_ada_label_studio.InviteOnlySignup",
              "sage_ada_label_studio.TrustedUrls"]

# Label Studio refuses webhooks and S3 endpoints on private and loopback addresses (SSRF
# protection: any of its users, annotators included, may register a webhook). The team's own
# receiver (infra/webhooks/) and object store live on exactly such addresses, so the operator
# names them here, as origins (scheme://host:port), and only those are let through; everything
# else stays banned. infra/label-studio/server.sh sets it from the receiver's URL and
# label_studio.s3.endpoint.
TRUSTED_URLS = os.environ.get("SAGE_ADA_TRUSTED_URLS", "").split()


def origin(url: str) -> tuple:
    """(scheme, host, port) as the HTTP client that sends the request parses it (urllib3, under
    requests and botocore), so a URL that parsers read differently cannot pass for a trusted
    one; a URL with a user part or a backslash is never trusted."""
    from urllib3.util import parse_url

    try:
        u = parse_url(url)
    except Exception:
        return ("", "", None)
    if u.auth is not None or "\\" in url or "@" in (u.netloc or ""):
        return ("", "", None)
    return (u.scheme, (u.host or "").lower(), u.port or {"http": 80, "https": 443}.get(u.scheme))


class TrustedUrls:
    """Lets Label Studio's SSRF checks pass for ``TRUSTED_URLS``'s origins only: creating a
    webhook or an S3 storage that points there, sending a webhook there (without following
    redirects, so a trusted address cannot bounce a request elsewhere), and connecting to that
    S3 endpoint. Installed once, when Django loads the middleware (its apps are ready then)."""

    installed = False

    def __init__(self, get_response):
        self.get_response = get_response
        if TRUSTED_URLS and not TrustedUrls.installed:
            TrustedUrls.installed = True
            _trust({origin(u) for u in TRUSTED_URLS})

    def __call__(self, request):
        return self.get_response(request)


def _trust(trusted: set) -> None:
    import requests
    from io_storages.s3 import serializers as s3_serializers
    from io_storages.s3 import utils as s3_utils
    from webhooks import serializers as webhook_serializers
    from webhooks import utils as webhook_utils

    def unless_trusted(check):
        def validate(url, *args, **kwargs):
            if origin(url) in trusted:
                return None
            return check(url, *args, **kwargs)
        return validate

    for module in (webhook_serializers, s3_serializers, s3_utils):
        module.validate_url_for_ssrf = unless_trusted(module.validate_url_for_ssrf)
    post = webhook_utils.ssrf_safe_post

    def send(url, *args, **kwargs):
        if origin(url) in trusted:
            return requests.post(url, *args, allow_redirects=False, **kwargs)
        return post(url, *args, **kwargs)

    webhook_utils.ssrf_safe_post = send
    guard = s3_utils._guard_client_connections

    def guard_unless_trusted(client):
        if origin(client.meta.endpoint_url) not in trusted:
            guard(client)

    s3_utils._guard_client_connections = guard_unless_trusted

INVITE_ONLY_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign-up is by invitation | Label Studio</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;
line-height:1.5;color:#222}a{color:#0b57d0}</style></head>
<body><h1>Sign-up here is by invitation only</h1>
<p>Accounts on this Label Studio are made by the person who runs it. Ask them for an account
(they make one with <code>infra/label-studio/add-annotator.sh</code>) or for the organisation's
invite link (Organization &rarr; Add People), and open that link to sign up.</p>
<p>Already have an account? <a href="/user/login/">Log in</a>.</p>
</body></html>
"""


class InviteOnlySignup:
    """/user/signup without the organisation's invite token, while sign-up needs the link: the
    invitation page (403), before any form is shown or filled in."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if self._refused(request):
            from django.http import HttpResponseForbidden

            return HttpResponseForbidden(INVITE_ONLY_PAGE)
        return self.get_response(request)

    @staticmethod
    def _refused(request) -> bool:
        from django.conf import settings

        if getattr(settings, "DISABLE_SIGNUP_WITHOUT_LINK", False) is not True:
            return False
        if request.path.rstrip("/") != "/user/signup":
            return False
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return False            # Label Studio sends them on to their projects
        token = request.GET.get("token")
        if not token:
            return True
        from organizations.models import Organization

        organization = Organization.objects.first()  # the one Label Studio's own check uses
        return organization is None or token != organization.token
