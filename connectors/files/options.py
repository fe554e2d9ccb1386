"""Options of the files connector."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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

    @field_validator("encoding")
    @classmethod
    def _a_text_encoding(cls, name: str) -> str:
        try:
            "".encode(name)  # also refuses codecs that are not text encodings (hex, base64)
        except LookupError:
            raise ValueError(
                f"unknown text encoding {name!r}; use one Python knows, e.g. utf-8, "
                "utf-8-sig, cp1252 or latin-1"
            ) from None
        return name


class FilesOptions(ConnectorOptions):
    """[sources.NAME.options] of a files source."""

    folder: str
    streams: dict[str, StreamFiles] = Field(min_length=1)
    settle_seconds: float = Field(default=5.0, ge=0)
    batch_size: int = Field(default=5000, ge=1, le=100_000)
