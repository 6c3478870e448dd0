"""zerolabel-backend: the Label Studio ML backend HTTP server (no torch, no discovery code).

It parses Label Studio's requests and hands tasks to
:class:`zerolabel.queue.service.PredictionService`, which queues them for the workers.
"""
