"""Client and brain for the NanoMDM server: commands, parsed device results, profiles, schema checks."""

from mdm_client.errors import CommandError, MalformedReport, MDMError, ProfileError, SchemaError

__all__ = ["CommandError", "MDMError", "MalformedReport", "ProfileError", "SchemaError"]
