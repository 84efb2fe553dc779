"""Loading a model for inference: a local model, or any model spec as a Backend.

    lm = load_local("default", adapter="runs/x/adapter")          # a LoadedModel (models/loading.py)
    backend = open_backend("openai:http://127.0.0.1:8000/v1#m")   # or a name / folder / .gguf / LoadedModel

Kept apart from backend.py and endpoint.py so that each of them imports only what it implements;
this module picks between them (prefixed backends register themselves: infer/protocol.py).
"""
from __future__ import annotations


def load_local(model, adapter=None, device=None):
    """A LoadedModel from a name/folder, or the given LoadedModel with `adapter` attached."""
    if hasattr(model, "model") and hasattr(model, "tokenizer"):  # a LoadedModel
        if adapter is not None and getattr(model, "adapter", None) is None:
            from tunelab.models.loading import attach_adapter

            attach_adapter(model, adapter)
        return model
    from tunelab.models.loading import load_model

    return load_model(model, adapter=adapter, device=device)


def open_backend(model, adapter=None, device=None, reference=None):
    """A backend for a model name / folder / .gguf / LoadedModel, or a prefixed model string such as
    an `openai:URL#NAME` endpoint (the backend registered for that prefix: infer/protocol.py).

    `reference`: the model implicit-reward metrics measure against (a full-weights DPO model's
    starting point), loaded when first needed; without it, base + adapter's reference is the base.
    """
    from tunelab.infer.backend import LocalBackend

    cls = backend_class(model)
    if cls is not None:
        if reference is not None:
            from tunelab.errors import ParameterError

            raise ParameterError(f"{{reference}}: {model} is scored by its own backend ({cls.prefix}); a reference "
                                 "model is scored beside a local model only", "reference")
        return cls(model, adapter=adapter)
    lm = load_local(model, adapter, device)
    if reference is None:
        return LocalBackend(lm)
    # loaded only when a metric asks for it, on the model's own device
    return LocalBackend(lm, reference=lambda: load_local(reference, device=str(next(lm.model.parameters()).device)),
                        reference_name=str(getattr(reference, "name", reference)))


def backend_class(model):
    """The registered backend whose prefix starts `model` (e.g. "openai:"), or None: a local model.

    Only a string that looks prefixed and is not an existing path pays for the scan of infer/'s
    modules; names, folders and loaded models go straight to the local backend.
    """
    import re
    from pathlib import Path

    if not isinstance(model, str) or not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", model) or Path(model).exists():
        return None
    from tunelab.infer.protocol import registered

    return next((cls for prefix, cls in registered().items() if model.startswith(prefix)), None)
