"""The claims the test provider gives: the login name, and the user's groups (scope "groups")."""

from oidc_provider.lib.claims import ScopeClaims


def userinfo(claims, user):
    claims["preferred_username"] = user.username
    claims["name"] = user.username
    return claims


class GroupsClaims(ScopeClaims):
    info_groups = ("Groups", "The groups you are in.")

    def scope_groups(self):
        return {"groups": sorted(g.name for g in self.user.groups.all())}
