"""Training jobs (submit, follow, cancel, retry) and model versions (history, promote, roll back, download)."""
