"""The Redis/RQ queue: RQ jobs and workers, with what RQ lacks for discovery jobs.

Backend side (no torch): ``dispatch`` (submit, collect, health) and ``service`` (Label Studio
tasks to jobs and back). Worker side: ``worker`` (RQ's SimpleWorker through its hooks),
``batch`` and ``claims`` (many jobs per forward pass), ``runtime`` (models loaded once). Both:
``heartbeat`` (one liveness record per worker), ``runs`` (dead runs, strikes, the quarantine),
``cache`` (results by content), ``writeback`` (late predictions). Each module's docstring says
what it adds to RQ.
"""
