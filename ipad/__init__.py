"""The iPad side: builders, store and use cases for the school iPads (push certificate, enrolment profile, ...)."""
