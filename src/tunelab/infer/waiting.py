"""How long an endpoint is waited for, and saying so while it is (infer/endpoint.py uses these).

A server that accepts a request and then says nothing is stuck, not busy: the HTTP client gives
up after `timeout` seconds without a byte and does not retry (`http_client`); `Notice` says, after
NOTICE_AFTER_S seconds without an answer, what is awaited and for how long, so a slow answer never
looks like a hang. The timeout is --timeout (`set_timeout`) or TUNELAB_ENDPOINT_TIMEOUT.
"""
from __future__ import annotations

import logging
import math
import os
import threading

from tunelab.errors import ParameterError, TunelabError

log = logging.getLogger("tunelab.infer.waiting")
# a non-streamed answer's first byte comes when the whole answer is generated: room for a long
# answer on a slow, busy server, yet a stuck one is told within two minutes
TIMEOUT_S = 120.0
TIMEOUT_VAR = "TUNELAB_ENDPOINT_TIMEOUT"
CONNECT_TIMEOUT_S = 10.0
NOTICE_AFTER_S = 3.0


def check_timeout(seconds, name: str = "timeout") -> float:
    """A timeout in seconds: a finite number > 0 (a ParameterError naming `name` otherwise)."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ParameterError(f"{{{name}}} must be a number of seconds > 0 (got {seconds!r})", name)
    return value


def default_timeout() -> float:
    """The first-byte timeout: TUNELAB_ENDPOINT_TIMEOUT (what --timeout sets), else TIMEOUT_S."""
    raw = os.environ.get(TIMEOUT_VAR, "").strip()
    if not raw:
        return TIMEOUT_S
    try:
        return check_timeout(raw, TIMEOUT_VAR)
    except ParameterError as e:
        raise TunelabError(f"{e}; set it to the endpoint timeout in seconds, or unset it (default {TIMEOUT_S:g})") from None


def set_timeout(seconds) -> None:
    """--timeout SECONDS: every endpoint this process opens waits that long for a byte."""
    os.environ[TIMEOUT_VAR] = repr(check_timeout(seconds))


class Notice:
    """One line, once per batch or chat turn, when no answer has come for NOTICE_AFTER_S seconds."""

    def __init__(self, text: str):
        self.text, self.said, self.timer = text, False, None
        self.reset()

    def _say(self) -> None:
        if not self.said:
            self.said = True
            log.warning(self.text)

    def reset(self) -> None:
        """An answer came: the wait starts again (said once at most)."""
        self.stop()
        if not self.said:
            self.timer = threading.Timer(NOTICE_AFTER_S, self._say)
            self.timer.daemon = True
            self.timer.start()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


def http_client(timeout):
    """openai's HTTP client, except that a read timeout (no byte for `timeout.read` seconds) is not
    retried: an OpenAIError raised in `send` passes the client's retry loop untouched, so a silent
    server costs one timeout, not 1 + max_retries of them. 429s, 5xx and refused connections are
    still retried (they come back at once)."""
    import httpx2
    import openai

    class GiveUpOnSilence(openai.DefaultHttpxClient):
        def send(self, request, **kwargs):
            try:
                return super().send(request, **kwargs)
            except httpx2.ReadTimeout as e:
                raise openai.APITimeoutError(request=request) from e

    return GiveUpOnSilence(timeout=timeout)
