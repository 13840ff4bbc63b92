"""Private parts of P3 topics: scans, consumer leases, lateness, deliveries."""
