"""The feature vocabulary the rules speak: removal behaviour and thresholds, the passkey policy, the
enrollment-state group names, the export rules. Pure values; shared/config.py builds connection documents
from them (docs/settings.md), and the domain reads them without depending on settings.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class FeatureDoc(BaseModel):
    """A part of a connection document: unknown members refused, immutable once read."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RemovalBehaviour(StrEnum):
    """What happens to a bridge user who leaves every sync group."""

    KEEP = "keep"
    DEACTIVATE = "deactivate"
    DELETE = "delete"


class RemovalThreshold(FeatureDoc):
    """A sync run that would remove more than this stops and raises an alert instead."""

    percent: Annotated[float, Field(ge=0, le=100)] = 10.0
    absolute: Annotated[int, Field(ge=0)] = 50


class PasskeyPolicy(StrEnum):
    """Whether users of this connection may, or must, enroll a device passkey."""

    DISABLED = "disabled"
    OPTIONAL = "optional"
    REQUIRED = "required"


class EnrollmentGroupNames(FeatureDoc):
    """Display names of the enrollment-state groups the bridge keeps in Entra."""

    not_enrolled: Annotated[str, Field(alias="notEnrolled")] = "Bridge - Not yet enrolled"
    paired_with_provider: Annotated[str, Field(alias="pairedWithProvider")] = "Bridge - Paired with provider"
    paired_with_entra: Annotated[str, Field(alias="pairedWithEntra")] = "Bridge - Paired with Entra"


#: An Entra object id.
OBJECT_ID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class ExportGroupRules(FeatureDoc):
    """How exported groups meet Entra's groups (docs/export.md)."""

    #: typeAndEmail: an Entra group of the same displayName matches only if its type and mail match too.
    match: Literal["typeAndEmail", "nameOnly"] = "typeAndEmail"
    #: onlyIfNameUnused: no group is created while any Entra group carries the name.
    create_when_unmatched: Annotated[Literal["always", "onlyIfNameUnused"],
                                     Field(alias="createWhenUnmatched")] = "onlyIfNameUnused"
    #: Delete other Entra groups of the same name, only those the bridge created (others are listed in status).
    remove_duplicates: Annotated[bool, Field(alias="removeDuplicates")] = False
    #: The kind of group created: a security group, or a Microsoft 365 group (groupTypes Unified, mail-enabled).
    kind: Literal["security", "microsoft365"] = "security"
    #: Object ids of the users or service principals made owners of each group the bridge creates
    #: (`owners@odata.bind` on create, at most 20: https://learn.microsoft.com/graph/api/group-post-groups).
    owners: Annotated[list[Annotated[str, Field(pattern=OBJECT_ID)]], Field(max_length=20)] = Field(
        default_factory=list)


class ExportFeature(FeatureDoc):
    """Export users and groups into Entra from the SCIM service (docs/export.md)."""

    enabled: bool = False
    default_license_sku: Annotated[str | None, Field(alias="defaultLicenseSku")] = None
    usage_location: Annotated[str | None, Field(alias="usageLocation", pattern=r"^[A-Z]{2}$")] = None
    #: How a SCIM user is mapped to an Entra user when no Entra id is linked yet.
    username_mapping: Annotated[Literal["upn", "mail", "userNameAtDomain", "employeeId"],
                                Field(alias="usernameMapping")] = "upn"
    #: The verified domain appended to the userName with usernameMapping userNameAtDomain.
    user_domain: Annotated[str | None, Field(alias="userDomain")] = None
    #: SCIM DELETE deletes a user the bridge created (else it is disabled).
    delete_users: Annotated[bool, Field(alias="deleteUsers")] = False
    #: More removals than this in one export run stop it (docs/architecture.md, invariant 4).
    removal_threshold: Annotated[int, Field(alias="removalThreshold", ge=0)] = 100
    #: Users the bridge creates: `password` (a random one, changed at first sign-in) or `passwordless` (a random
    #: one no one can use or is asked to change, for a Temporary Access Pass and passkey onboarding).
    new_users: Annotated[Literal["password", "passwordless"], Field(alias="newUsers")] = "password"
    groups: ExportGroupRules = ExportGroupRules()
