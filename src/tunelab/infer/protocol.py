"""The Backend: everything a caller (the evaluation runner, the chat, the safety runs, the compare)
asks of a model, as one `typing.Protocol`. `LocalBackend` (infer/backend.py) and `EndpointBackend`
(infer/endpoint.py) satisfy it; tests/infer/test_protocol.py checks both, member by member and
parameter by parameter, and that docs/architecture.md lists exactly these members.

A backend reached by a model-string prefix (`openai:URL#NAME`) is registered with `@prefixed`;
`open_backend` (infer/load.py) finds it by scanning infer/'s modules, so a new backend is one module
(and its test). A model string without a registered prefix is a local model.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Callable, ClassVar, Iterator, Optional, Protocol, Sequence, runtime_checkable

from tunelab.errors import TunelabError

OnBatch = Optional[Callable[[int], None]]


@runtime_checkable
class Backend(Protocol):
    """What the callers use; see infer/backend.py's docstring for the calls in context."""

    prefix: ClassVar[Optional[str]]  # "openai:" for `openai:URL#NAME`; None: a local model (the fallback)
    spec: str  # the model as a person names it
    adapter: Optional[str]  # the adapter folder on top of it, if any
    identity: object  # what results.json's model block and the signature are built from (.name, .sha256)
    tokenizer: object  # None when the model's tokenizer is not visible (a server applies its own template)
    device: object  # a torch device, None for a model behind a server
    cache_scope: tuple  # (weights hash, adapter hash) under which the request cache keeps its answers

    def template_id(self) -> str: ...

    def check_task(self, task, needs: frozenset = frozenset()) -> None:
        """Refuse in one line a task whose type needs what this backend lacks (`needs`: generation, loglik,
        rolling_loglik, chat_template, conversation; the task type says, evaluate/task_types/)."""

    def max_length(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def generate(self, contexts, seeds: Sequence[Optional[int]], *, batch_size: int, on_batch: OnBatch = None,
                 max_new_tokens: int, stop: Sequence[str], temperature: float, top_p: float) -> list[dict]: ...

    def score_choices(self, reqs, *, batch_size: int, on_batch: OnBatch = None): ...

    def rolling_loglik(self, texts, *, batch_size: int, on_batch: OnBatch = None): ...

    def answer_kl(self, prompts, answers, *, base=None, chat: bool = True, batch_size: int = 4): ...

    def stream_chat(self, messages: list[dict], *, max_new_tokens: int, temperature: float,
                    top_p: float) -> Iterator[str]: ...

    def no_reference(self) -> Optional[str]: ...

    def reference(self) -> contextlib.AbstractContextManager: ...

    def reference_identity(self) -> object: ...


def members(cls=Backend) -> list[str]:
    """The Protocol's member names, in the order written (attributes, then methods)."""
    names = list(cls.__annotations__)
    names += [n for n, v in vars(cls).items() if inspect.isfunction(v) and not n.startswith("_")]
    return names


class Unfinished(TunelabError):
    """A batch of requests that stopped part-way: `done` maps the index of each request answered
    to its answer (as the method returns it), so the caller can keep them (evaluate/cache.py)."""

    def __init__(self, error: TunelabError, done: dict, total: int):
        super().__init__(str(error), exit_code=error.exit_code)
        self.done, self.total = done, total


_PREFIXED: dict[str, type] = {}


def prefixed(cls: type) -> type:
    """Class decorator: the backend of model strings that start with `cls.prefix`."""
    missing = [m for m in members() if not hasattr(cls, m) and m not in cls.__annotations__]
    if missing or not isinstance(getattr(cls, "prefix", None), str):
        raise TypeError(f"{cls.__name__}: a backend needs a string `prefix` and every Backend member "
                        f"(infer/protocol.py); missing: {', '.join(missing) or 'prefix'}")
    if _PREFIXED.get(cls.prefix, cls) is not cls:
        raise TypeError(f"{cls.__name__}: prefix {cls.prefix!r} is taken by {_PREFIXED[cls.prefix].__name__}")
    _PREFIXED[cls.prefix] = cls
    return cls


def registered() -> dict[str, type]:
    """{prefix: backend class}, after importing every module of infer/ (discover.py; a no-op once imported)."""
    from tunelab.discover import import_package_modules

    import_package_modules("tunelab.infer")
    return dict(_PREFIXED)
