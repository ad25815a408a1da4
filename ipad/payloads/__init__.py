"""What werne installs on iPads, built from data files and checked against Apple's schemas:
configuration profiles (`profiles`, with `ikev2`), declarations (`declarations`), the enrolment
profile (`enrolment_profile`), and the schema checks (`mdm_schema`, `declaration_schema`)."""
