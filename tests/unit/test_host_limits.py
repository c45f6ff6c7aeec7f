"""The local host's own answers on the bridge's real routes: the body cap before any function, problem+json."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from local.host.__main__ import serve
from local.host.runtime import LocalHost
from tests.fixtures.host import real_app_host

LIMIT = 4096
_PARAM = re.compile(r"\{\*?(\w+)(?::\w+)?\??\}")


@pytest.fixture
def host() -> Iterator[LocalHost]:
    shared = real_app_host()
    original = shared.config
    shared.config = dataclasses.replace(original, max_body_bytes=LIMIT, function_keys={"default": "the-key"})
    try:
        yield shared
    finally:
        shared.config = original


def client(host: LocalHost) -> httpx.AsyncClient:
    # No lifespan: nothing behind the routes (storage, Graph) is needed for the host's own answers.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=serve(host)), base_url="http://127.0.0.1")


def every_route(host: LocalHost) -> list[tuple[str, str]]:
    return [(method, "/api/" + _PARAM.sub("x1", function.template.template).strip("/"))
            for function in host.http for method in sorted(function.methods)]


async def chunks(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // 1024):
        yield b"{" * 1024


def assert_413(answer: httpx.Response) -> None:
    assert answer.status_code == 413, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "MAX_BODY_BYTES" in answer.json()["detail"]


async def test_every_route_refuses_an_oversized_body_before_its_function(host: LocalHost) -> None:
    routes = every_route(host)
    assert ("POST", "/api/connections/x1/test") in routes
    assert ("POST", "/api/connections/x1/certificate/validate") in routes
    assert ("GET", "/api/health") in routes
    async with client(host) as http:
        for method, path in routes:
            # With a Content-Length (refused unread), and chunked (refused once the cap is passed).
            assert_413(await http.request(method, path, content=b"x" * (LIMIT + 1)))
            assert_413(await http.request(method, path, content=chunks(LIMIT + 1024)))
            # Keyed or not, with the key too: the cap comes before the function.
            assert_413(await http.request(method, path, content=b"x" * (LIMIT + 1),
                                          headers={"x-functions-key": "the-key"}))


async def test_a_60_mb_post_to_test_is_refused_unread(host: LocalHost) -> None:
    async with client(host) as http:
        for path in ("/api/connections/demo/test", "/api/connections/demo/certificate/validate"):
            answer = await http.post(path, content=b"{" * (60 * 1024 * 1024), headers={"x-functions-key": "the-key"})
            assert_413(answer)
            assert str(60 * 1024 * 1024) in answer.json()["detail"]
        # At the limit the request goes on (here to the key check).
        assert (await http.post("/api/connections/demo/test", content=b"x" * LIMIT)).status_code == 401


@pytest.mark.parametrize("path", ["/api/connections/de%0D%0Amo/status", "/api/he%0Aalth", "/%0D%0A", "/api/health%0A",
                                  "/api/connections/demo/users/%0D"])
async def test_paths_with_cr_or_lf_get_a_problem(host: LocalHost, path: str) -> None:
    async with client(host) as http:
        answer = await http.get(path)
    assert 400 <= answer.status_code < 500
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["status"] == answer.status_code


async def test_the_hosts_own_4xx_are_problems(host: LocalHost) -> None:
    async with client(host) as http:
        answers = [await http.get("/api/nothing-here"), await http.get("/elsewhere"),
                   await http.delete("/api/health"), await http.request("TRACE", "/api/health"),
                   await http.get("/api/connections/demo/status")]
    assert [a.status_code for a in answers] == [404, 404, 405, 405, 401]
    for answer in answers:
        assert answer.headers["content-type"].startswith("application/problem+json"), answer
        assert answer.json()["title"]
