"""Service settings: environment variables with the prefix KAMP_, embedded defaults for one machine."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.config import Precision

if TYPE_CHECKING:
    from .imaging.types import ImageLimits
    from .training.bounds import TrainingBounds


class Settings(BaseSettings):
    """Every field can be set as KAMP_<FIELD> (e.g. KAMP_DATABASE_URL)."""

    model_config = SettingsConfigDict(env_prefix="KAMP_", env_file=None, extra="ignore")

    #: Folder of the embedded defaults: the SQLite database and the blob store live under it.
    data_dir: Path = Path("var")
    #: SQLAlchemy URL; default sqlite:///<data_dir>/kamp.db. PostgreSQL: postgresql+psycopg://user@host/db
    database_url: str | None = None
    #: Blob folder; default <data_dir>/blobs.
    blob_dir: Path | None = None
    #: Object storage for blobs instead of the folder, s3://bucket/prefix (API nodes and workers on several
    #: hosts share it); credentials and region as boto3 reads them (AWS_ACCESS_KEY_ID, ...).
    blob_url: str | None = Field(default=None, pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$")
    #: The S3 API's address for a store other than AWS's (MinIO: http://minio:9000).
    s3_endpoint_url: str | None = None
    #: Key of the digests kept of uploaded file names (server.studies.names); default: a random key file created
    #: under data_dir. API replicas that do not share data_dir must share this setting.
    pseudonym_key: SecretStr | None = None
    #: Largest accepted upload, bytes (413 above).
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    #: Threads of the API's pool for blocking work (database, decoding, storage), and its database connections:
    #: kept open, opened beyond at a peak, and the seconds a request waits for one (then 503 with Retry-After).
    #: The default pool holds a connection for every thread.
    api_threads: int = Field(default=40, ge=1, le=1000)
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)
    db_pool_timeout_s: float = Field(default=10.0, gt=0)
    #: Uploads decoded at once by this API process, and the seconds a request waits for a slot (then 503).
    max_concurrent_decodes: int = Field(default=4, ge=1)
    decode_wait_s: float = Field(default=30.0, gt=0)
    #: Largest JSON request body, bytes (413 before it is read).
    max_json_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    #: Largest body of a request with several files (a batch, a prediction job, an import), bytes; a single-file
    #: upload's limit is max_upload_bytes (server.body_guard).
    max_request_bytes: int = Field(default=2 * 1024 * 1024 * 1024, gt=0)
    #: Largest annotation import, bytes: its files together (413 above), held in memory while they are parsed.
    max_import_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    #: Most instances (multipart parts) one STOW-RS request may carry (413 above): each costs memory and an item
    #: of the answer, however small the body.
    max_stow_instances: int = Field(default=1000, gt=0)
    #: Largest accepted image, pixels (413 above); checked from the header before decoding.
    max_image_pixels: int = Field(default=60_000_000, gt=0)
    #: Largest array a decoder may make of one image, bytes (413 above): pixels x samples x bytes per sample,
    #: checked from the header before decoding (see server.imaging.types.ImageLimits).
    max_decoded_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    #: Requests per minute per API key (429 above); 0 disables the limit.
    rate_limit_per_minute: int = Field(default=1200, ge=0)
    #: Share of a landmark set's studies that get the validation role (decided by quota as each joins, then frozen).
    validation_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    #: Celery broker; default: SQLite under the data folder (kombu's SQLAlchemy transport). Production:
    #: redis://host:6379/0
    broker_url: str | None = None
    #: Celery result backend; default: SQLite under the data folder. Production: redis://host:6379/1
    result_backend: str | None = None
    #: Default promotion gate (a project may override either): the new landmarks' MRE must be below this
    #: (mm, or pixels where the studies have no spacing) ...
    gate_max_new_mre: float = Field(default=4.0, gt=0)
    #: Bounds of a training job's settings (server.training.bounds): iterations of each stage, batch size, and
    #: the devices a job may name.
    max_train_iterations: int = Field(default=20_000, ge=1)
    max_train_batch_size: int = Field(default=64, ge=1)
    train_devices: tuple[str, ...] = ("auto", "cpu", "cuda")
    #: ... and no old step's MRE may grow by more than this over the parent version's (same unit).
    gate_old_tolerance: float = Field(default=0.5, ge=0)
    #: An incremental step submitted with fewer annotated training studies than this gets a warning in its job
    #: log: the benchmark's low-shot profiles measured what one study a step costs the earlier landmarks and
    #: that ten held them (docs/benchmarks.md).
    few_train_studies: int = Field(default=10, ge=0)
    #: Run every prediction on one dedicated thread (one OpenMP pool) instead of the web server's worker threads.
    inference_single_thread: bool = True
    #: On that thread, requests waiting together are predicted in one forward pass of up to this many images
    #: (server/predict/batcher.py: 4 is the best per-image time measured on a 2-core CPU; more on a GPU).
    inference_max_batch: int = Field(default=4, ge=1, le=64)
    #: Precision of training and inference (models.precision): "auto" is bf16 autocast + channels_last on a GPU and on
    #: CPUs with AMX or AVX-512 BF16, fp32 elsewhere; "bf16" or "fp32" force one. A project's training settings
    #: may name their own.
    precision: Precision = "auto"
    #: torch threads of each worker process and of the API's inference thread; default: OMP_NUM_THREADS if set,
    #: else every core the process may run on (docs/benchmarks.md, "Training and prediction on one machine").
    torch_threads: int | None = Field(default=None, ge=1, le=1024)
    #: Most images in one asynchronous prediction job (POST /v1/projects/{id}/predict/jobs; 413 above).
    max_prediction_job_images: int = Field(default=500, gt=0)
    #: A running job whose heartbeat is older than this (seconds) is taken for dead by the reaper.
    job_stale_after_s: int = Field(default=900, gt=0)
    #: A blob no row refers to, or a temporary file a dead writer left, is deleted by the reaper once it is this
    #: old (seconds): long enough for any upload or job to commit the row that refers to what it wrote.
    orphan_blob_after_s: int = Field(default=3600, gt=0)
    #: Training jobs of one clinic running at once on all workers together; beyond, and while another clinic
    #: that was served less recently has a job ready to start, a job waits its turn (worker.fairness).
    max_running_jobs_per_clinic: int = Field(default=1, ge=1)
    #: Longest a training job may run on a worker (seconds, each claim); then it fails with the reason, and a
    #: retry resumes it from its training state. One clinic's job cannot hold a shared worker for ever.
    max_job_seconds: int = Field(default=4 * 3600, gt=0)

    @property
    def training_bounds(self) -> TrainingBounds:
        from .training.bounds import TrainingBounds

        return TrainingBounds(self.max_train_iterations, self.max_train_batch_size, self.train_devices)

    @property
    def image_limits(self) -> ImageLimits:
        from .imaging.types import ImageLimits

        return ImageLimits(pixels=self.max_image_pixels, decoded_bytes=self.max_decoded_bytes)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'kamp.db').resolve()}"

    @property
    def resolved_blob_dir(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def resolved_result_backend(self) -> str:
        return self.result_backend or f"db+sqlite:///{(self.data_dir / 'results.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
