"""/health and /metrics: what the database machinery knows about itself, for machines.

- `probes`: the facts, read when asked (backups, the migrate's state and last run, room, sizes,
  replication); one source for both endpoints;
- `checks`: django-health-check plugins over the probes (the queue's own are in queueing/monitoring.py);
- `metrics`: a prometheus-client collector over the probes, read at scrape time;
- `views`: the two endpoints, closed without a bearer token or a staff login.
"""
