"""API clients for the MDM servers we drive (NanoMDM, NanoDEP), their shared HTTP conventions,
and the one factory every caller gets a client from (`mdm_client.factory`)."""

from mdm_client.errors import CommandError, MalformedReport, MDMError, ProfileError, SchemaError

__all__ = ["CommandError", "MDMError", "MalformedReport", "ProfileError", "SchemaError"]
