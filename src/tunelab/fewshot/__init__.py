"""Few-shot demonstrations: samplers (random, first_n, stratified, similar) and prompt assembly."""
from tunelab.fewshot.context import Context, ContextBuilder
from tunelab.fewshot.samplers import SAMPLERS, make_sampler

__all__ = ["Context", "ContextBuilder", "SAMPLERS", "make_sampler"]
