"""The classroom Apple TVs: AirPlay destinations of the iPads, enrolment and configuration, updates."""
