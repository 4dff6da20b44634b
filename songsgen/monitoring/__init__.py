"""/health and /metrics: what the database machinery knows about itself, for machines.

`probes` are the facts, `checks` and `metrics` read them, `views` wires the two endpoints.
"""
