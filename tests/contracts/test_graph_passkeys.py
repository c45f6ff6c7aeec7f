"""PasskeyDirectory (Entra's FIDO2 provisioning API) on the in-memory tenant and on the Graph adapter against
the simulator: creation options, registration of an attested credential, the list, revocation (gone counts as
revoked), the policy, and the refusals devices rely on (a challenge of another user, a credential registered
twice, the policy turned off)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from local.authenticator import SoftwareAuthenticator
from shared.errors import InvalidInput, PermissionDenied
from shared.services.passkeys import repair_base64url
from shared.services.ports import CreationOptions
from tests.fixtures.graph_contracts import GraphSubject


def _answer(options: CreationOptions, authenticator: SoftwareAuthenticator | None = None) -> dict[str, Any]:
    """The authenticator's registration response, as a device sends it back."""
    public_key = {**options.public_key, "challenge": repair_base64url(str(options.public_key["challenge"]))}
    return (authenticator or SoftwareAuthenticator()).register({"publicKey": public_key})


@pytest.fixture
async def policy_kept(graph: GraphSubject) -> AsyncIterator[None]:
    yield
    await graph.admin.fido2_policy(state="enabled", isSelfServiceRegistrationAllowed=True)


async def test_options_register_list_and_revoke(graph: GraphSubject) -> None:
    user = await graph.admin.add_user(graph.unique("passkey"))
    options = await graph.passkeys.creation_options(user)
    assert options.public_key["challenge"]
    assert options.public_key["rp"]["id"] == "login.microsoftonline.com"
    assert options.public_key["excludeCredentials"] == []
    assert options.challenge_expires
    assert not any(key.startswith("@odata") for key in options.public_key)

    method = await graph.passkeys.register(user, "Desk key", _answer(options))
    assert method.id
    assert method.display_name == "Desk key"
    assert method.request_id
    assert [m.id for m in await graph.passkeys.methods(user)] == [method.id]

    again = await graph.passkeys.creation_options(user)
    assert len(again.public_key["excludeCredentials"]) == 1

    revoked = await graph.passkeys.revoke(user, method.id)
    assert revoked.outcome == "revoked"
    assert await graph.passkeys.methods(user) == []
    assert (await graph.passkeys.revoke(user, method.id)).outcome == "already-gone"


async def test_a_challenge_of_another_user_is_refused(graph: GraphSubject) -> None:
    ann, ben = await graph.admin.add_user(graph.unique("ann")), await graph.admin.add_user(graph.unique("ben"))
    options = await graph.passkeys.creation_options(ann)
    with pytest.raises(InvalidInput):
        await graph.passkeys.register(ben, "key", _answer(options))
    assert await graph.passkeys.methods(ben) == []


async def test_a_challenge_is_used_once_and_a_credential_registered_once(graph: GraphSubject) -> None:
    user = await graph.admin.add_user(graph.unique("once"))
    options = await graph.passkeys.creation_options(user)
    answer = _answer(options)
    await graph.passkeys.register(user, "key", answer)
    with pytest.raises(InvalidInput):
        await graph.passkeys.register(user, "key", answer)
    # A faulty authenticator answering with the same credential id, whatever excludeCredentials says.
    fresh = await graph.passkeys.creation_options(user)
    same_id = base64.urlsafe_b64decode(answer["rawId"] + "=" * (-len(answer["rawId"]) % 4))
    public_key = {**fresh.public_key, "challenge": repair_base64url(str(fresh.public_key["challenge"]))}
    with pytest.raises(InvalidInput):
        await graph.passkeys.register(user, "key", SoftwareAuthenticator().register({"publicKey": public_key},
                                                                                     credential_id=same_id))
    assert len(await graph.passkeys.methods(user)) == 1


async def test_the_policy_is_read_and_a_disabled_method_is_refused(graph: GraphSubject, policy_kept: None) -> None:
    policy = await graph.passkeys.policy()
    assert policy["state"] == "enabled"
    assert "keyRestrictions" in policy
    assert not any(key.startswith("@odata") for key in policy)
    user = await graph.admin.add_user(graph.unique("off"))
    await graph.admin.fido2_policy(state="disabled")
    assert (await graph.passkeys.policy())["state"] == "disabled"
    with pytest.raises(PermissionDenied):
        await graph.passkeys.creation_options(user)
