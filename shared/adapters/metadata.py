"""Fetch IdP metadata over https with size and time limits.

Metadata is public, so no credential is sent; redirects are followed only to https. The local
profile trusts the local CA through the SSL context the composition root passes in (LOCAL_CA_FILE).
"""

from __future__ import annotations

import ssl
from urllib.parse import urlparse

import httpx

from shared.errors import InvalidInput, Transient

MAX_BYTES = 1024 * 1024
TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 3


class HttpsMetadataSource:
    """Implements MetadataSource with httpx."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True, max_bytes: int = MAX_BYTES,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self._verify = verify
        self._max_bytes = max_bytes
        self._timeout = timeout

    async def fetch(self, url: str) -> bytes:
        """The document at `url`; InvalidInput for a bad URL or answer, Transient when the IdP is unreachable."""
        parsed = urlparse(url)
        if parsed.scheme != "https" or not parsed.netloc:
            raise InvalidInput(f"the metadata URL must be an absolute https URL, not {url!r}", field="metadataUrl")
        client = httpx.AsyncClient(verify=self._verify, timeout=self._timeout, follow_redirects=False)
        accept = {"accept": "application/samlmetadata+xml, application/xml, text/xml"}
        target = httpx.URL(url)
        try:
            async with client:
                # Redirects are followed by hand so that none leaves https.
                for _ in range(MAX_REDIRECTS + 1):
                    async with client.stream("GET", target, headers=accept) as response:
                        if not response.is_redirect:
                            return await self._read(url, response)
                        target = target.join(response.headers.get("location", ""))
                    if target.scheme != "https":
                        raise InvalidInput(f"the metadata URL redirected to a non-https URL {target}",
                                           field="metadataUrl")
            raise InvalidInput(f"the metadata URL {url} redirects more than {MAX_REDIRECTS} times",
                               field="metadataUrl")
        except httpx.TimeoutException:
            raise Transient(f"the IdP's metadata at {url} did not arrive within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise Transient(f"the IdP's metadata at {url} cannot be fetched: {type(exc).__name__}: {exc}") from None

    async def _read(self, url: str, response: httpx.Response) -> bytes:
        if response.status_code >= 500:
            raise Transient(f"the IdP answered {response.status_code} for its metadata at {url}")
        if response.status_code != 200:
            raise InvalidInput(f"the IdP answered {response.status_code} for its metadata at {url}",
                               field="metadataUrl")
        declared = int(response.headers.get("content-length") or 0)
        if declared > self._max_bytes:
            raise InvalidInput(f"the metadata at {url} is {declared} bytes; at most {self._max_bytes} are read",
                               field="metadataUrl")
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data.extend(chunk)
            if len(data) > self._max_bytes:
                raise InvalidInput(f"the metadata at {url} exceeds {self._max_bytes} bytes", field="metadataUrl")
        return bytes(data)
