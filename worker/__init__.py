"""GPU/CPU workers: the Celery app, thin tasks, and the job functions that train and validate model versions."""
