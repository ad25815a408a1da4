"""Setting up the MDM service once (docs/go-live.md): the APNs push certificate (`push_cert`, its
record in `push_cert_store`), the SCEP CA and challenge (`scep_ca`), NanoMDM's PostgreSQL schema
(`nanomdm_db`)."""
