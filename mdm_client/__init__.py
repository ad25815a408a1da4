"""Client and brain for the NanoMDM server: commands, parsed device results, profiles, schema checks."""

from mdm_client.errors import MalformedReport, MDMError, ProfileError, SchemaError

__all__ = ["MDMError", "MalformedReport", "ProfileError", "SchemaError"]
