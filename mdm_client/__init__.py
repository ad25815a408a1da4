"""API clients for the servers the iPad side drives (NanoMDM, NanoDEP, KMFDDM, Apple's Apps and
Books, SCEP), their shared HTTP conventions (`http`), their exception tree (`errors`) and the one
factory every caller gets a client from (`factory`)."""
