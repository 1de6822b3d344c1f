"""Label Studio's own settings, plus one page: sign-up says that it is by invitation only.

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

MIDDLEWARE = [*MIDDLEWARE, "sage_ada_label_studio.InviteOnlySignup"]

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
