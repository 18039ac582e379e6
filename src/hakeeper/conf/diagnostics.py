"""Config diagnostics: source locations, graded messages and did-you-mean hints.

Every reader (keepalived.conf, nginx.conf) reports into one `Diagnostics` sink so that
all problems of a file come out in one pass, each as `file:line:col: error|warning: msg`
(the format compilers use, so editors can jump to it).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True, slots=True, order=True)
class Location:
    """A position in a config file; line and col are 1-based."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


_new = object.__new__
# Raw slot setters: the frozen dataclass __init__ costs ~3x as much, and the lexer
# builds a Location for every brace and every reported word.
_set_file = vars(Location)["file"].__set__
_set_line = vars(Location)["line"].__set__
_set_col = vars(Location)["col"].__set__


def make_location(file: str, line: int, col: int) -> Location:
    """The same object `Location(file, line, col)` builds, without its __init__'s overhead."""
    loc: Location = _new(Location)
    _set_file(loc, file)
    _set_line(loc, line)
    _set_col(loc, col)
    return loc


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    loc: Location | None
    message: str

    def format(self) -> str:
        where = str(self.loc) if self.loc is not None else "<config>"
        return f"{where}: {self.severity}: {self.message}"


@dataclass(slots=True)
class Diagnostics:
    """Collects every problem found; never raises for bad input."""

    items: list[Diagnostic] = field(default_factory=list)

    def error(self, loc: Location | None, message: str) -> None:
        self.items.append(Diagnostic(Severity.ERROR, loc, message))

    def warning(self, loc: Location | None, message: str) -> None:
        self.items.append(Diagnostic(Severity.WARNING, loc, message))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.WARNING]

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self.items)

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def sorted(self) -> list[Diagnostic]:
        """Diagnostics in file/line/col order (unlocated ones last), stable otherwise."""
        return sorted(
            self.items,
            key=lambda d: (d.loc is None, d.loc or Location("", 0, 0)),
        )


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ` (did you mean 'x'?)` for the closest candidate, or '' when none is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
