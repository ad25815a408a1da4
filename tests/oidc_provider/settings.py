"""A throwaway OpenID Connect provider for the tests: django-oidc-provider (a maintained provider for
Django) in a project of its own, its settings from the environment the fixture sets."""

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECRET_KEY = os.environ["OIDC_TEST_SECRET"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions", "oidc_provider"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [str(HERE / "templates")],
              "APP_DIRS": True, "OPTIONS": {"context_processors": ["django.template.context_processors.request"]}}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["OIDC_TEST_DB"]}}
USE_TZ = True
LOGIN_URL = "/accounts/login/"
SITE_URL = os.environ["OIDC_TEST_SITE_URL"]
OIDC_USERINFO = "claims.userinfo"
OIDC_EXTRA_SCOPE_CLAIMS = "claims.GroupsClaims"
OIDC_IDTOKEN_INCLUDE_CLAIMS = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
