from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

from ..bodies import RequestBody, UtcDatetime
from ..db.entities import Role

_KEEP_DESCRIPTORS = (
    "store DICOM descriptions (StudyDescription, SeriesDescription, ProtocolName, ImageComments, "
    "AcquisitionDeviceProcessingDescription) verbatim instead of removing them (PS3.15's Clean Descriptors "
    "option); only for a clinic whose descriptions are known to hold no patient data"
)


class ClinicIn(RequestBody):
    name: str = Field(min_length=1, max_length=200, examples=["Riverside Orthodontics"])
    keep_descriptors: bool = Field(default=False, description=_KEEP_DESCRIPTORS)


class ClinicSettingsIn(RequestBody):
    """What a clinic's admin (or the system key) may change of a clinic; it applies to studies stored later."""

    keep_descriptors: bool = Field(description=_KEEP_DESCRIPTORS)


class ClinicOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    keep_descriptors: bool = Field(description=_KEEP_DESCRIPTORS)
    created_at: UtcDatetime


class ApiKeyIn(RequestBody):
    role: Role = Field(examples=["annotator"])
    name: str = Field(default="", max_length=200, examples=["tracing station 2"])


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    clinic_id: uuid.UUID | None
    role: Role
    name: str
    prefix: str
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None


class NewApiKey(ApiKeyOut):
    key: str = Field(description="The secret key. It is shown only in this response: store it now.")


class ClinicCreated(BaseModel):
    clinic: ClinicOut
    admin_key: NewApiKey


class WhoAmI(BaseModel):
    """The key a request presented: what the console signs in with and shows or hides by."""

    key_id: uuid.UUID
    clinic_id: uuid.UUID | None = Field(description="null for the system key")
    role: Role
    name: str
