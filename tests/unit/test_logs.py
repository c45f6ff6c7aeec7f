"""The log filter masks secrets in messages, arguments, exceptions and structured fields."""

from __future__ import annotations

import io
import json
import logging

import pytest

from shared import logs

PASSWORD = "Zq7!mK2#pL9@xW4$"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXZhbHVl"
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logs.configure(fmt="json", level="DEBUG", stream=stream)
    yield logging.getLogger("test.logs"), stream
    logging.getLogger().removeHandler(handler)


def test_registered_values_and_patterns_never_reach_the_output(captured: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = captured
    logs.register_secret(PASSWORD)
    log.info("set password %s for %s", PASSWORD, "ann")
    log.info("Authorization: Bearer %s", JWT)
    log.info("token %s", JWT)
    log.info('body {"password": "%s", "clientSecret": "abc123456"}', "other-secret-1")
    log.info("form client_secret=s3cr3tvalue&grant_type=client_credentials")
    log.info("key %s", PEM)
    try:
        raise ValueError(f"failed with {PASSWORD}")
    except ValueError:
        log.exception("boom")
    log.info("audit", extra={"custom_dimensions": {"detail": f"pw {PASSWORD}"}})
    out = stream.getvalue()
    for secret in (PASSWORD, JWT, "other-secret-1", "abc123456", "s3cr3tvalue", "MIIEvQIBADAN"):
        assert secret not in out
    assert out.count(logs.MASK) >= 8
    assert all(json.loads(line)["correlationId"] for line in out.splitlines() if line.startswith("{"))


def test_the_correlation_id_is_on_every_line(captured: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = captured
    with logs.correlation("corr-42"):
        log.warning("inside")
    log.warning("outside")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["correlationId"] for line in lines] == ["corr-42", "-"]


def test_text_lines_carry_the_correlation_id_and_mask_too() -> None:
    stream = io.StringIO()
    handler = logs.configure(fmt="text", level="INFO", stream=stream)
    try:
        with logs.correlation("corr-text"):
            logging.getLogger("test.logs").info("sent %s", {"client_secret": "very-secret-value"})
    finally:
        logging.getLogger().removeHandler(handler)
    line = stream.getvalue()
    assert "[corr-text]" in line
    assert "very-secret-value" not in line
