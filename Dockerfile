# One image for the API, the migration step and the workers.
#   CPU:  docker build -t kamp .
#   GPU:  docker build -t kamp-gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 KAMP_DATA_DIR=/data

WORKDIR /app
# The torch build first (CPU or CUDA), so the project's exact pin is already satisfied.
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}"
COPY pyproject.toml README.md alembic.ini ./
COPY models ./models
COPY server ./server
COPY worker ./worker
COPY migrations ./migrations
COPY bench ./bench
# Editable, so that `kamp install` finds alembic.ini and migrations/ beside the packages.
RUN pip install -e .

RUN useradd --create-home --uid 1000 kamp && mkdir -p /data && chown kamp /data
USER kamp
EXPOSE 8000
CMD ["kamp", "serve", "--no-worker", "--host", "0.0.0.0", "--port", "8000"]
