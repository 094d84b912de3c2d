"""Diagnostics: ``diag.error("greeter.multi-line", "options.greeting", "…", "remove the line breaks")``.

``path`` ``options.x.y`` is rewritten by the host to ``features[N].options.x.y``;
any other path is taken from the recipe root (``users[0].name``).
"""

from __future__ import annotations

from typing import Iterable, Optional

from wit_world.imports.types import Diagnostic, Severity


def error(code: str, path: str, message: str, suggestion: Optional[str] = None) -> Diagnostic:
    """A problem that stops the build."""
    return Diagnostic(Severity.ERROR, code, path, message, suggestion)


def warning(code: str, path: str, message: str, suggestion: Optional[str] = None) -> Diagnostic:
    """A problem worth saying that does not stop the build."""
    return Diagnostic(Severity.WARNING, code, path, message, suggestion)


def closest(given: str, candidates: Iterable[str]) -> Optional[str]:
    """The candidate within two edits of ``given``, if any: for "did you mean"."""
    best = min(((_distance(given, c), c) for c in candidates), default=None)
    return best[1] if best is not None and best[0] <= 2 else None


def _distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a):
        prev, row[0] = row[0], i + 1
        for j, cb in enumerate(b):
            cur = row[j + 1]
            row[j + 1] = min(prev + (ca != cb), row[j] + 1, cur + 1)
            prev = cur
    return row[len(b)]


class Refused(Exception):
    """Raised by ``plan`` to refuse the recipe with these diagnostics."""

    def __init__(self, *diagnostics: Diagnostic) -> None:
        super().__init__("; ".join(d.message for d in diagnostics))
        self.diagnostics = diagnostics
