"""A terminal chat with a model (and an optional adapter) that streams its answer as it is generated.

The conversation is kept as messages and rendered with the model's own chat template on every
turn (`templates.render_prompt`, what training and evaluation use), so the model sees exactly the
format it was tuned on. Streaming is transformers' `TextIteratorStreamer` over `model.generate` on
a helper thread; Ctrl-C during an answer stops it through a stopping criterion.

Commands: /reset, /system TEXT, /save FILE, /help, /exit (Ctrl-D and Ctrl-C at the prompt also exit).
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Callable, Optional, TextIO

from tunelab.errors import TunelabError

HELP = ("commands: /reset (forget the conversation, keep the system text)  /system TEXT (set the system text; "
        "/system alone clears it)  /save FILE (write the messages as JSON)  /exit")
USER_PROMPT = "you> "
ASSISTANT_PREFIX = "assistant> "


class Chat:
    """The conversation state and one streaming reply at a time."""

    def __init__(self, lm, *, system: Optional[str] = None, max_new_tokens: int = 512, temperature: float = 0.7,
                 top_p: float = 0.95):
        from tunelab.models.loading import max_length

        self.lm, self.system = lm, system or None
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.history: list[dict] = []
        self.context = max_length(lm.model, lm.tokenizer)

    def messages(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history

    def reply(self, user_text: str, write: Callable[[str], None]) -> str:
        """Add the user's turn, stream the answer through `write`, keep both turns; return the answer.

        Ctrl-C stops the answer early (what came so far is kept); a turn that does not fit the
        context is a TunelabError and leaves the conversation as it was.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        from tunelab.templates import render_prompt

        lm = self.lm
        messages = self.messages() + [{"role": "user", "content": user_text}]
        ids = lm.tokenizer(render_prompt(lm.tokenizer, messages), add_special_tokens=False, return_tensors="pt")["input_ids"]
        room = self.context - ids.shape[1]
        if room < 1:
            raise TunelabError(f"the conversation is {ids.shape[1]} tokens, over the model's context of {self.context}; "
                               "/reset to start again")
        stop = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return stop.is_set()

        streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = ({"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
                    if self.temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
        kwargs = dict(input_ids=ids.to(lm.model.device), attention_mask=torch.ones_like(ids).to(lm.model.device),
                      max_new_tokens=min(self.max_new_tokens, room), streamer=streamer,
                      stopping_criteria=StoppingCriteriaList([_Stop()]), pad_token_id=lm.tokenizer.pad_token_id, **sampling)
        failure: list[BaseException] = []

        def run():
            try:
                with torch.inference_mode():
                    lm.model.generate(**kwargs)
            except BaseException as e:  # reported on the main thread
                failure.append(e)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        pieces: list[str] = []
        try:
            for piece in streamer:
                pieces.append(piece)
                write(piece)
        except KeyboardInterrupt:
            stop.set()
            write(" [stopped]")
        worker.join()
        if failure:
            raise failure[0]
        answer = "".join(pieces)
        self.history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": answer}]
        return answer

    def save(self, path: str) -> Path:
        from tunelab.io import atomic_write_json

        out = Path(path).expanduser()
        try:
            atomic_write_json(out, {"model": self.lm.name, "adapter": self.lm.adapter, "messages": self.messages()})
        except OSError as e:
            raise TunelabError(f"/save {path}: cannot write there ({e.strerror or e}); give another file") from None
        return out


def run_chat(chat: Chat, *, read: Callable[[str], str] = input, out: TextIO = sys.stdout) -> None:
    """The read-eval-print loop; returns when the user leaves (never raises for Ctrl-C/Ctrl-D)."""
    def write(text: str) -> None:
        out.write(text)
        out.flush()

    write(f"chatting with {chat.lm.name}{' + ' + str(chat.lm.adapter) if chat.lm.adapter else ''}; /help for commands, /exit to leave\n")
    while True:
        try:
            line = read(USER_PROMPT)
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return
        text = line.strip()
        if not text:
            continue
        command, _, arg = text.partition(" ")
        try:
            if command in ("/exit", "/quit"):
                return
            elif command == "/reset":
                chat.history.clear()
                write("(conversation cleared)\n")
            elif command == "/system":
                chat.system = arg.strip() or None
                write(f"(system text {'set' if chat.system else 'cleared'})\n")
            elif command == "/save":
                if not arg.strip():
                    raise TunelabError("/save needs a file name, e.g. /save chat.json")
                write(f"(saved {chat.save(arg.strip())})\n")
            elif command == "/help":
                write(HELP + "\n")
            elif command.startswith("/"):
                write(f"unknown command {command}; {HELP}\n")
            else:
                write(ASSISTANT_PREFIX)
                chat.reply(line, write)
                write("\n")
        except TunelabError as e:
            write(f"\nerror: {e}\n")
