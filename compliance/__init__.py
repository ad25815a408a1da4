"""Compliance: baselines as data mapped to BSI IT-Grundschutz, the nightly run over laptops and iPads,
waivers, a hash-chained history of runs, and reports (HTML, CSV, JSON, JUnit)."""
