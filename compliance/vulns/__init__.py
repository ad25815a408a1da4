"""Known vulnerabilities of the laptops' installed packages: Debian's security tracker data and
Ubuntu's USN data imported as snapshots (`werne laptop vulns import`), matched in Debian's version
order against the packages each laptop's facts list."""
