"""The FIDO Metadata Service stand-in: `GET /mds3/` answers the local test MDS3 blob (local/mds.py).

The FIDO Alliance serves the blob at https://mds3.fidoalliance.org/ as a JWT (https://fidoalliance.org/metadata/);
Entra checks enforced attestation against the same service
(https://learn.microsoft.com/entra/identity/authentication/how-to-enable-passkey-fido2), so the simulator's
FIDO2 routes use this blob too. No token is needed: the service is public.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from local.entra.core import Simulator
from local.mds import served


def routes(sim: Simulator) -> list[Route]:
    """The MDS3 blob route."""
    del sim

    async def blob(request: Request) -> Response:
        return Response(served(), media_type="application/octet-stream")

    return [Route("/mds3/", blob, methods=["GET"])]
