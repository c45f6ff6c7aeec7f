"""Fetch IdP metadata over https with size and time limits, from public addresses only.

Metadata is public, so no credential is sent; redirects are followed only to https. The local
profile trusts the local CA through the SSL context the composition root passes in (LOCAL_CA_FILE).

The URL comes from an operator's request and is fetched again by the federation monitor, from inside
the function app's network: outside `cloud: local` every hop's host is resolved first and refused when
any of its addresses is private, loopback, link-local or otherwise not globally reachable (this covers
the instance metadata endpoint 169.254.169.254, IPv6 forms, and IPv4 addresses mapped or embedded in
IPv6); the connection then goes to the address that was checked, with the name kept for TLS, so a
second DNS answer cannot point it elsewhere. OWASP's SSRF prevention cheat sheet describes the attack:
https://cheatsheetseries.owasp.org/cheatsheets/Server_Side_Request_Forgery_Prevention_Cheat_Sheet.html
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlparse

import httpx

from shared.errors import InvalidInput, Transient

MAX_BYTES = 1024 * 1024
TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 3

#: Resolves a host name and port to IP address strings.
Resolver = Callable[[str, int], Awaitable[list[str]]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system's resolver gives for `host` (IPv4 and IPv6)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches (::ffff:a.b.c.d, 6to4, Teredo), if any."""
    if isinstance(address, ipaddress.IPv6Address):
        return address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
    return None


def refusal(address: Address) -> str | None:
    """Why an address must not be fetched from outside the local profile, or None when it is public."""
    embedded = embedded_ipv4(address)
    if embedded is not None:
        return refusal(embedded)  # judged as the IPv4 address it reaches
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_private:
        return "private"
    if address.is_multicast or address.is_unspecified or address.is_reserved or not address.is_global:
        return "not globally reachable"
    return None


class HttpsMetadataSource:
    """Implements MetadataSource with httpx."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True, max_bytes: int = MAX_BYTES,
                 timeout: float = TIMEOUT_SECONDS, private_addresses: bool = False,
                 resolver: Resolver = system_resolver) -> None:
        self._verify = verify
        self._max_bytes = max_bytes
        self._timeout = timeout
        #: Only the local profile (`cloud: local`) fetches from private and loopback addresses.
        self._private_addresses = private_addresses
        self._resolve = resolver

    async def fetch(self, url: str) -> bytes:
        """The document at `url`; InvalidInput for a bad URL, a refused address or answer, Transient when the IdP
        is unreachable."""
        parsed = urlparse(url)
        if parsed.scheme != "https" or not parsed.netloc:
            raise InvalidInput(f"the metadata URL must be an absolute https URL, not {url!r}", field="metadataUrl")
        client = httpx.AsyncClient(verify=self._verify, timeout=self._timeout, follow_redirects=False)
        accept = {"accept": "application/samlmetadata+xml, application/xml, text/xml"}
        target = httpx.URL(url)
        try:
            async with client:
                # Redirects are followed by hand so that none leaves https, and each hop's address is checked.
                for _ in range(MAX_REDIRECTS + 1):
                    request = await self._request(client, target, accept)
                    response = await client.send(request, stream=True)
                    try:
                        if not response.is_redirect:
                            return await self._read(url, response)
                        target = target.join(response.headers.get("location", ""))
                    finally:
                        await response.aclose()
                    if target.scheme != "https":
                        raise InvalidInput(f"the metadata URL redirected to a non-https URL {target}",
                                           field="metadataUrl")
            raise InvalidInput(f"the metadata URL {url} redirects more than {MAX_REDIRECTS} times",
                               field="metadataUrl")
        except httpx.TimeoutException:
            raise Transient(f"the IdP's metadata at {url} did not arrive within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise Transient(f"the IdP's metadata at {url} cannot be fetched: {type(exc).__name__}: {exc}") from None

    async def _request(self, client: httpx.AsyncClient, target: httpx.URL, headers: dict[str, str]) -> httpx.Request:
        """The GET for `target`; outside the local profile, sent to the checked address with the name kept for TLS."""
        if self._private_addresses:
            return client.build_request("GET", target, headers=headers)
        host = target.host
        address = await self._public_address(host, target.port or 443, str(target))
        pinned = target.copy_with(host=str(address))
        return client.build_request("GET", pinned, headers={**headers, "host": target.netloc.decode("ascii")},
                                    extensions={"sni_hostname": host})

    async def _public_address(self, host: str, port: int, url: str) -> Address:
        try:
            found = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in await self._resolve(host, port)]
            except OSError as exc:
                raise Transient(f"the IdP's host {host!r} cannot be resolved ({type(exc).__name__})") from None
        if not found:
            raise Transient(f"the IdP's host {host!r} has no address")
        for address in found:
            why = refusal(address)
            if why is not None:
                inner = embedded_ipv4(address)
                shown = f"{address} ({inner})" if inner else str(address)
                raise InvalidInput(f"the metadata URL {url} resolves to {shown}, a {why} address: metadata is "
                                   "fetched only from public addresses (private ones only with cloud: local)",
                                   field="metadataUrl")
        return found[0]

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
