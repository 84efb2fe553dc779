"""A terminal chat with a model (and an optional adapter) that streams its answer as it is generated.

The conversation is kept as messages and sent whole on every turn to the Backend's `stream_chat`
(infer/): a local model renders it with its own chat template (`templates.render_prompt`, what
training and evaluation use), so the model sees exactly the format it was tuned on; an
`openai:URL#NAME` endpoint gets the messages and applies its own. Ctrl-C during an answer closes
the stream, which stops the generation.

Commands: /reset, /system TEXT, /save FILE, /help, /exit (Ctrl-D and Ctrl-C at the prompt also exit).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional, TextIO

from tunelab.errors import TunelabError, sigterm_received

HELP = ("commands: /reset (forget the conversation, keep the system text)  /system TEXT (set the system text; "
        "/system alone clears it)  /save FILE (write the messages as JSON)  /exit")
USER_PROMPT = "you> "
ASSISTANT_PREFIX = "assistant> "


class Chat:
    """The conversation state and one streaming reply at a time, from any Backend (infer/backend.py)."""

    def __init__(self, backend, *, system: Optional[str] = None, max_new_tokens: int = 512, temperature: float = 0.7,
                 top_p: float = 0.95):
        self.backend, self.system = backend, system or None
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.history: list[dict] = []

    def messages(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history

    def reply(self, user_text: str, write: Callable[[str], None]) -> str:
        """Add the user's turn, stream the answer through `write`, keep both turns; return the answer.

        Ctrl-C stops the answer early (what came so far is kept); a turn that does not fit the
        context is a TunelabError and leaves the conversation as it was.
        """
        from tunelab.infer.stream import ContextFull

        messages = self.messages() + [{"role": "user", "content": user_text}]
        try:
            pieces_in = self.backend.stream_chat(messages, max_new_tokens=self.max_new_tokens,
                                                 temperature=self.temperature, top_p=self.top_p)
        except ContextFull as e:
            raise TunelabError(f"{e}; /reset to start again") from None
        pieces: list[str] = []
        try:
            for piece in pieces_in:
                pieces.append(piece)
                write(piece)
        except KeyboardInterrupt:
            pieces_in.close()  # stops the generation (a local thread, or the endpoint's connection)
            if sigterm_received():  # SIGTERM: the machine is going away, so the chat ends, not only this answer
                raise
            write(" [stopped]")
        answer = "".join(pieces)
        self.history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": answer}]
        return answer

    def save(self, path: str) -> Path:
        from tunelab.io import atomic_write_json

        out = Path(path).expanduser()
        try:
            atomic_write_json(out, {"model": self.backend.spec, "adapter": self.backend.adapter, "messages": self.messages()})
        except OSError as e:
            raise TunelabError(f"/save {path}: cannot write there ({e.strerror or e}); give another file") from None
        return out


def run_chat(chat: Chat, *, read: Callable[[str], str] = input, out: TextIO = sys.stdout) -> None:
    """The read-eval-print loop; returns when the user leaves (never raises for Ctrl-C/Ctrl-D)."""
    def write(text: str) -> None:
        out.write(text)
        out.flush()

    who = chat.backend.spec + (f" + {chat.backend.adapter}" if chat.backend.adapter else "")
    write(f"chatting with {who}; /help for commands, /exit to leave\n")
    while True:
        try:
            line = read(USER_PROMPT)
        except (EOFError, KeyboardInterrupt):
            write("\n")
            if sigterm_received():  # exit 143 and its line (cli), not a quiet 0
                raise
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
