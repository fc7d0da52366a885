"""The web console: static pages served by the API process at `/` (the API itself stays under `/v1`)."""
