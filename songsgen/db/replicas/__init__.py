"""Read replicas: the router, read-your-writes by WAL position, each replica's lag, the migrate's wait.

Settings: DATABASE_REPLICA_URLS and friends (songsgen/settings.py); docs/postgres.md, "Read replicas".
"""

from songsgen.db.replicas.context import Reads, current, replica_reads
from songsgen.db.replicas.health import ReplicaState, aliases, health, probe
from songsgen.db.replicas.middleware import ReplicaReadsMiddleware
from songsgen.db.replicas.replay import ReplayWait
from songsgen.db.replicas.router import ReplicaRouter, read_connection

__all__ = ["Reads", "ReplayWait", "ReplicaReadsMiddleware", "ReplicaRouter", "ReplicaState", "aliases", "current",
           "health", "probe", "read_connection", "replica_reads"]
