"""`.dockerignore`: Docker's pattern rules (moby/patternmatcher and its ignorefile reader).

A pattern matches a path when it matches the path or any of its parent directories; the
last matching pattern decides, and a `!` pattern takes a path back. `*` and `?` never cross
`/`, `**` crosses any number of directories, `\\` escapes the next character, `[...]` is a
character class.
"""

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

_REGEX_SPECIAL = ".+()|{}$"


class BadPattern(ValueError):
    pass


def read_ignore_file(text: str) -> list[str]:
    """The patterns of a .dockerignore, normalized as Docker's ignorefile.ReadAll does."""
    out = []
    for number, line in enumerate(text.splitlines()):
        if number == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = posixpath.normpath(pattern)
            if pattern.startswith("//"):
                pattern = pattern[1:]  # normpath keeps two leading slashes; Clean does not
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


def compile_pattern(pattern: str) -> re.Pattern[str]:
    regex = "^"
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1  # `**/` is `**`
                regex += ".*" if i >= n else "(.*/)?"
            else:
                regex += "[^/]*"
        elif ch == "?":
            regex += "[^/]"
        elif ch in _REGEX_SPECIAL:
            regex += "\\" + ch
        elif ch == "\\":
            if i < n:
                regex += re.escape(pattern[i])
                i += 1
            else:
                regex += "\\\\"
        elif ch in "[]":
            regex += ch
        elif ch == "^":
            regex += "\\^"
        else:
            regex += re.escape(ch) if not ch.isalnum() and ch not in "/_-" else ch
    regex += "$"
    try:
        return re.compile(regex, re.DOTALL)
    except re.error as exc:
        raise BadPattern(f"syntax error in pattern: {pattern}") from exc


@dataclass(frozen=True)
class _Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]


class PatternMatcher:
    def __init__(self, patterns: list[str]) -> None:
        self.patterns: list[_Pattern] = []
        for raw in patterns:
            text = raw.strip()
            if not text:
                continue
            text = posixpath.normpath(text)
            exclusion = text.startswith("!")
            if exclusion:
                if len(text) == 1:
                    raise BadPattern('illegal exclusion pattern: "!"')
                text = text[1:]
            self.patterns.append(_Pattern(text, exclusion, compile_pattern(text)))

    @property
    def has_exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def matches(self, path: str) -> bool:
        """Whether path (relative, `/`-separated) is ignored (MatchesOrParentMatches)."""
        path = posixpath.normpath(path)
        parent = posixpath.dirname(path)
        parents = parent.split("/") if parent else []
        matched = False
        for pattern in self.patterns:
            # An inclusion cannot change a match, nor an exclusion a non-match.
            if pattern.exclusion != matched:
                continue
            hit = bool(pattern.regex.match(path))
            if not hit and parents:
                for i in range(len(parents)):
                    if pattern.regex.match("/".join(parents[:i + 1])):
                        hit = True
                        break
            if hit:
                matched = not pattern.exclusion
        return matched


def apply_ignore(root: Path, patterns: list[str]) -> None:
    """Remove what the patterns exclude from the extracted context under root.

    A directory goes only when it is excluded and nothing under it was taken back.
    Blocking."""
    matcher = PatternMatcher(patterns)
    if not matcher.patterns:
        return
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath,
                                                                                   d))]:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if matcher.matches(rel):
                os.unlink(os.path.join(dirpath, name))
        if rel_dir != "." and matcher.matches(rel_dir) and not os.listdir(dirpath):
            os.rmdir(dirpath)
