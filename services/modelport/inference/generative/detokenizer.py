"""Token ids → text, one token at a time, and stop strings.

Decoding a single token is wrong for byte-level and sentencepiece vocabularies
(a character can span tokens; a leading space depends on the previous token),
so each delta is the difference between decoding a short window that ends at
the new token and the same window without it; a window ending inside a
multi-byte character (U+FFFD) emits nothing until the character completes.

Stop strings may straddle deltas: text that could be the start of a stop
string is held back until it is known not to be, and a stop string found is
cut off with everything after it (OpenAI's convention).
"""

from __future__ import annotations

from collections.abc import Sequence

from modelport.inference.generative.protocol import Tokenizer

_INCOMPLETE = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # window start
        self._read = 0  # tokens already turned into text
        self._stop = tuple(stop)
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self.text = ""  # everything decoded so far (cut at a stop string once found)
        self._emitted = 0  # characters of self.text handed out
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        """Feed one generated token; return the text that may be shown now."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(_INCOMPLETE):
            searched_from = max(0, len(self.text) - self._longest_stop + 1)
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self._ids)
            if self._stop and self._cut_at_stop(searched_from):
                self.stopped = True
        return self._take(final=self.stopped)

    def flush(self) -> str:
        """At the end of the sequence: whatever was held back, and the tokens of a character
        the sequence ended inside (as U+FFFD, as `decode` of the whole sequence shows it)."""
        if not self.stopped and self._read < len(self._ids):
            before = self._decode(self._ids[self._prefix : self._read])
            after = self._decode(self._ids[self._prefix :])
            if len(after) > len(before):
                searched_from = max(0, len(self.text) - self._longest_stop + 1)
                self.text += after[len(before) :]
                self._read = len(self._ids)
                if self._stop and self._cut_at_stop(searched_from):
                    self.stopped = True
        return self._take(final=True)

    def _cut_at_stop(self, start: int) -> bool:
        found = [i for s in self._stop if (i := self.text.find(s, start)) >= 0]
        if not found:
            return False
        self.text = self.text[: min(found)]
        return True

    def _take(self, *, final: bool) -> str:
        end = len(self.text) if final else len(self.text) - self._held_back()
        if end <= self._emitted:
            return ""
        delta = self.text[self._emitted : end]
        self._emitted = end
        return delta

    def _held_back(self) -> int:
        """Length of the longest tail of the text that begins some stop string."""
        tail = self.text[-self._longest_stop :] if self._longest_stop else ""
        for k in range(min(len(tail), self._longest_stop - 1), 0, -1):
            if any(s.startswith(tail[-k:]) for s in self._stop):
                return k
        return 0
