"""The request log: one JSON line per request (id, key identity, version, tokens, latency,
status). Prompts and outputs are written only when the operator asks (`log_content`), and
then PII-masked by the intake's analyzer."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from lamina import workspace


class RequestLog:
    def __init__(self, path: Path | None = None, content: bool = False, masker=None):
        self.path = Path(path) if path else workspace.subdir("serve") / "requests.jsonl"
        self.content, self.masker = content, masker
        self._lock = threading.Lock()

    def write(self, entry: dict, prompt: str | None = None, output: str | None = None) -> None:
        if self.content:
            entry = {**entry, "prompt": self._mask(prompt), "output": self._mask(output)}
        line = json.dumps(entry, ensure_ascii=False, default=str) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)  # one write per line: a reader never sees half an entry

    def _mask(self, text: str | None) -> str | None:
        if text is None or self.masker is None:
            return text
        return self.masker.mask(text)[0]
