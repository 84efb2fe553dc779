"""Chat-template rendering and trained-token masks taken from the template's own rendering."""
from tunelab.templates.render import (
    PLAIN_TEMPLATE,
    Encoded,
    encode,
    encode_all,
    encode_prompt,
    render,
    render_prompt,
    template_of,
    template_sha256,
)

__all__ = ["PLAIN_TEMPLATE", "Encoded", "encode", "encode_all", "encode_prompt", "render",
           "render_prompt", "template_of", "template_sha256"]
