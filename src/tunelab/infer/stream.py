"""One answer from a local model, streamed piece by piece as it is generated.

    for piece in stream_text(model, tokenizer, prompt_ids, max_new_tokens=64, temperature=0.7, top_p=0.95):
        print(piece, end="")

transformers' `TextIteratorStreamer` over `model.generate` on a helper thread (it turns token ids
into text pieces that never split a character). Leaving the loop early (`close()`, or Ctrl-C
raised while it waits) stops the generation at its next token through a stopping criterion and
waits for the thread, so no decoding outlives the loop.
"""
from __future__ import annotations

import threading
from typing import Iterator

from tunelab.errors import TunelabError


class ContextFull(TunelabError):
    """The conversation leaves no room for an answer in the model's context (the caller may say how to go on)."""


def stream_text(model, tokenizer, prompt_ids: list[int], *, max_new_tokens: int, temperature: float,
                top_p: float) -> Iterator[str]:
    """Text pieces of one answer to `prompt_ids` (temperature 0: greedy)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    stop = threading.Event()

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return stop.is_set()

    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = ({"do_sample": True, "temperature": temperature, "top_p": top_p}
                if temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, streamer=streamer,
                  stopping_criteria=StoppingCriteriaList([_Stop()]), pad_token_id=tokenizer.pad_token_id, **sampling)
    failure: list[BaseException] = []

    def run():
        try:
            with torch.inference_mode():
                model.generate(**kwargs)
        except BaseException as e:  # re-raised on the caller's thread below
            failure.append(e)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        yield from streamer
    finally:  # finished, closed early or interrupted: the generation stops at its next token
        stop.set()
        worker.join()
    if failure:
        raise failure[0]
