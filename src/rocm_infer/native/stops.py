"""Stop strings with hold-back, on text alone (no model needed to test it).

Text that could still turn into a stop string is held back until it is known
not to; the stop string itself, and anything after it, is never released.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StopMatcher:
    stops: tuple[str, ...]
    held: str = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add newly generated text; return (text safe to release, stopped)."""
        if not self.stops:
            return text, False
        buffer = self.held + text
        # the stop string that completes first (ends earliest; of those, the longest) wins,
        # as a stream that sees one character at a time would find it: so the output does
        # not depend on how the text was split into tokens
        hits = [(i + len(stop), i) for stop in self.stops if (i := buffer.find(stop)) >= 0]
        if hits:
            self.held = ""
            return buffer[: min(hits)[1]], True
        keep = _longest_stop_prefix_suffix(buffer, self.stops)
        self.held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """At the end of generation (no stop matched) the held text is released."""
        text, self.held = self.held, ""
        return text


def _longest_stop_prefix_suffix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best
