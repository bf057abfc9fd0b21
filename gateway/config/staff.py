"""How compliance staff are declared in the settings (``[[staff]]`` in the TOML file)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

StaffRole = Literal["auditor", "admin"]


class StaffMember(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    role: StaffRole
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    def may(self, permission: Literal["read", "export", "verify", "keys"]) -> bool:
        """auditor: read and export; admin: also verify the log and key operations."""
        return permission in ("read", "export") or self.role == "admin"
