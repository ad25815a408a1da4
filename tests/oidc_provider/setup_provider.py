"""Prepare the test provider's database: schema, an RSA signing key, the users and their groups,
and werne as a confidential client (code flow, its redirect URL, no consent screen)."""

import os
import sys

import django

django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from oidc_provider.models import Client, ResponseType  # noqa: E402

call_command("migrate", verbosity=0)
call_command("creatersakey")
password = os.environ["OIDC_TEST_PASSWORD"]
for line in sys.argv[1].split(","):
    name, group = line.split(":")
    user = User.objects.create_user(name, password=password)
    user.groups.add(Group.objects.get_or_create(name=group)[0])
client = Client.objects.create(name="werne", client_id="werne", client_secret=os.environ["OIDC_TEST_CLIENT_SECRET"],
                               client_type="confidential", jwt_alg="RS256", require_consent=False)
client.response_types.add(ResponseType.objects.get(value="code"))
client.redirect_uris = [sys.argv[2]]
client.scope = ["openid", "profile", "email", "groups"]
client.save()
