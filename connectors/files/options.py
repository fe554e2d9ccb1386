"""Options of the files connector."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from syncd.connector import ConnectorOptions


class StreamFiles(BaseModel):
    """Which files feed one stream, and how to read them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str = Field(description="file name glob, e.g. customers*.csv")
    format: Literal["csv", "jsonl"] | None = Field(
        default=None, description="csv or jsonl; by default from the file extension"
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8"


class FilesOptions(ConnectorOptions):
    """[sources.NAME.options] of a files source."""

    folder: str
    streams: dict[str, StreamFiles] = Field(min_length=1)
    settle_seconds: float = Field(default=5.0, ge=0)
    batch_size: int = Field(default=5000, ge=1, le=100_000)
