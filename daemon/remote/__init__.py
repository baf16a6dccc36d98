"""Workers on other hosts through Celery and a Redis broker (`workers.backend: celery`).

The ingest host keeps the whole file queue: it claims, retries, fails and writes every output; Celery only
carries one job's bytes to a worker and its enriched document back. app.py: the Celery application and its
settings; tasks.py: the task and what a worker child sets up (pinning, model); pool.py: the supervisor's
side, a `Pool` that publishes jobs and collects their results; worker.py: `enrichd worker`.
"""
