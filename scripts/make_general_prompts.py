"""Write src/tunelab/data/general/self_instruct_prompts.jsonl from the Self-Instruct user-oriented set.

    python scripts/make_general_prompts.py ../shared/data/self_instruct/user_oriented_instructions.jsonl

The source is yizhongw/self-instruct @ 0b26ccaa : human_eval/user_oriented_instructions.jsonl
(Apache-2.0, 252 instructions). Each record keeps its id and becomes one prompt: the instruction,
then a blank line and the first instance's input when it has one (the answers are not kept: drift
is measured on the base model's own answers). src/tunelab/data/general/NOTICE carries the
attribution the licence asks for.
"""
import json
import sys
from pathlib import Path

src = Path(sys.argv[1])
out = Path(__file__).resolve().parents[1] / "src" / "tunelab" / "data" / "general" / "self_instruct_prompts.jsonl"
lines = []
for raw in src.read_text(encoding="utf-8").splitlines():
    rec = json.loads(raw)
    extra = (rec.get("instances") or [{}])[0].get("input", "").strip()
    prompt = rec["instruction"].strip() + (f"\n\n{extra}" if extra else "")
    lines.append(json.dumps({"id": rec["id"], "prompt": prompt}, ensure_ascii=False))
out.write_text("\n".join(lines) + "\n", encoding="utf-8")
print(f"{len(lines)} prompts -> {out}")
