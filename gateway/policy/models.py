"""The policy files' models: the field catalogue and each shop's consent policy.

Pydantic validates the shape (and publishes the JSON Schema, ``gateway policy schema``);
the cross-checks that need the catalogue (unknown field, transform not allowed, sensitive
fields mixed with ordinary ones, a field without a purpose, duplicates) are in ``lint.py``,
which reports each with its file and line.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Sensitivity = Literal["ordinary", "sensitive"]
FieldType = Literal["string", "name", "url", "region", "address", "email", "phone", "date",
                    "id_number", "location"]
# PIPL art. 13 lists the lawful bases; a shop receiving data through the gateway relies on
# consent, or on the necessity of a contract the person is party to.
LegalBasis = Literal["consent", "contract", "legal_obligation"]
PURPOSE_ID = r"^[a-z][a-z0-9_-]{1,39}$"


class Texts(BaseModel):
    """A text in both languages of the screens."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    zh_cn: str = Field(alias="zh-CN", min_length=1)
    en: str = Field(min_length=1)

    def get(self, language: str) -> str:
        return self.zh_cn if language == "zh-CN" else self.en


class CatalogueField(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: FieldType
    claim: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    sensitivity: Sensitivity
    description: Texts
    transforms: list[str] = Field(min_length=1)


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    fields: dict[str, CatalogueField]


class Purpose(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=PURPOSE_ID)
    name: Texts
    description: Texts
    legal_basis: LegalBasis = "consent"
    retention_days: int = Field(ge=1, le=3650)


class FieldRule(BaseModel):
    """One field a shop receives, for one purpose, with one transform."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    purpose: str | None = None
    transform: str = "pass"
    required: bool = False


class ShopPolicy(BaseModel):
    """The consent part of a shop's file (``policy:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(default=1, ge=1)
    purposes: list[Purpose] = Field(default_factory=list)
    fields: list[FieldRule] = Field(default_factory=list)

    def purpose(self, purpose_id: str) -> Purpose | None:
        return next((p for p in self.purposes if p.id == purpose_id), None)

    def rules_for(self, purpose_id: str) -> list[FieldRule]:
        return [r for r in self.fields if r.purpose == purpose_id]
