"""The Redis/RQ queue: dispatch, result cache, leases, the job entry point, the worker loop.

``dispatch`` and ``service`` import no torch (the backend uses them); ``jobs`` and
``runtime`` run in workers."""
