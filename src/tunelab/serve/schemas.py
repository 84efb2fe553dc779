"""Request bodies of the OpenAI API subset tunelab serves, and OpenAI's error shape.

Validation is pydantic in strict mode, so a string where a number belongs is a 400 naming the
field, as OpenAI's own API answers, rather than being coerced. Unknown fields are ignored: clients
send options (user, presence_penalty, ...) that do not change what a local model can do.
"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_STOP = 16


class ApiError(Exception):
    """An error answered as {"error": {"message", "type", "param", "code"}} with an HTTP status."""

    TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
             413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}

    def __init__(self, status: int, message: str, *, param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: Optional[int] = Field(default=None, ge=0)
    # allow_inf_nan=False: NaN passes no range check and would be refused as "not <= 2"; say what it is
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    n: int = Field(default=1, ge=1, le=1)  # one choice per request
    stop: Union[str, list[str], None] = None
    # torch's generators take seeds in [-2**63, 2**64); outside that a 400, not a failed generation
    seed: Optional[int] = Field(default=None, ge=-(2**63), lt=2**64)
    stream: bool = False
    stream_options: Optional[dict] = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        return [s for s in stops if s]

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    logprobs: Optional[bool] = None

    def plain_messages(self) -> list[dict]:
        # "developer" is OpenAI's newer name for the system role; templates know "system"
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(_Request):
    prompt: Union[str, list[str]]
    echo: bool = False
    logprobs: Optional[int] = Field(default=None, ge=0, le=20)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("give one prompt string (batches of prompts are not served; send one request each)")
            v = v[0]
        return v


def _param(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[TextPart]", "list[str]", "function-after[_stops(), union[str,list[str],none]]"):
            continue  # pydantic names the union member tried; the field is what the user wrote
        else:
            out += ("." if out else "") + str(part)
    return out


def parse(cls, data) -> BaseModel:
    """Validate a decoded JSON body; the first problem becomes a 400 naming the field."""
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_body")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        param = _param(err["loc"]) or None
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required"
        elif err.get("input", ...) is None:
            msg = f"is required (got null; {msg[0].lower() + msg[1:]})"
        raise ApiError(400, f"{param}: {msg}" if param else msg, param=param, code="invalid_value") from None
