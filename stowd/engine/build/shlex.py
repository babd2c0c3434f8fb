"""Docker's word expansion for Dockerfile instructions (BuildKit's `shell/lex.go`).

Not a shell: quotes are removed, `\\` (or the escape directive's character) escapes the
next one, and `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`,
`${VAR+word}`, `${VAR:?msg}` and `${VAR?msg}` are replaced. `process_word` keeps unquoted
whitespace (ENV, LABEL, COPY sources ...); `process_words` splits on it (EXPOSE, VOLUME).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

_SPECIAL_PARAMS = "@*#?-$!0"


class ShellLexError(ValueError):
    pass


def env_map(env: list[str]) -> dict[str, str]:
    """`KEY=value` entries as a mapping; later entries win, as Docker's BuildEnvs."""
    out: dict[str, str] = {}
    for entry in env:
        key, sep, value = entry.partition("=")
        out[key] = value if sep else ""
    return out


@dataclass
class _Words:
    word: str = ""
    words: list[str] = field(default_factory=list)
    in_word: bool = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def get_words(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class _Scanner:
    def __init__(self, source: str, env: Mapping[str, str], escape: str) -> None:
        self.src = source
        self.pos = 0
        self.env = env
        self.escape = escape

    def peek(self) -> str:
        return self.src[self.pos] if self.pos < len(self.src) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def stop_on(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while (ch := self.peek()) != "":
            if stop and ch == stop:
                self.next()
                return "".join(result), words.get_words()
            if ch in "'\"$":
                if ch == "'":
                    text = self.single_quote()
                elif ch == '"':
                    text = self.double_quote()
                else:
                    text = self.dollar()
                result.append(text)
                if ch == "$":
                    words.add_string(text)
                else:
                    words.add_raw_string(text)
                continue
            ch = self.next()
            if ch == self.escape:
                ch = self.next()
                if ch == "":
                    break
                words.add_raw_char(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop:
            raise ShellLexError(
                f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get_words()

    def single_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.next()
            if ch == "":
                raise ShellLexError("unexpected end of statement while looking for matching "
                                    "single-quote")
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if ch == "":
                raise ShellLexError("unexpected end of statement while looking for matching "
                                    "double-quote")
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                following = self.peek()
                if following == "":
                    continue  # a lone escape at the end is dropped
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        out: list[str] = []
        while (ch := self.peek()) != "":
            if not out and ch.isdigit():
                while self.peek().isdigit():
                    out.append(self.next())
                return "".join(out)
            if not out and ch in _SPECIAL_PARAMS:
                return self.next()
            if not (ch.isalnum() or ch == "_"):
                break
            out.append(self.next())
        return "".join(out)

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            return self.env.get(name, "")
        self.next()
        if self.peek() == "":
            raise ShellLexError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise ShellLexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "":
            raise ShellLexError("syntax error: missing '}'")
        if ch == "}":
            return self.env.get(name, "")
        colon = ch == ":"
        modifier = self.next() if colon else ch
        if modifier not in ("-", "+", "?"):
            if colon:
                raise ShellLexError(f"unsupported modifier ({modifier}) in substitution")
            raise ShellLexError("missing ':' in substitution")
        try:
            word, _ = self.stop_on("}")
        except ShellLexError:
            if self.peek() == "":
                raise ShellLexError("syntax error: missing '}'") from None
            raise
        found = name in self.env
        value = self.env.get(name, "")
        # With a colon, an empty value counts as unset (POSIX).
        is_set = bool(value) if colon else found
        if modifier == "-":
            return value if is_set else word
        if modifier == "+":
            return word if is_set else ""
        if not is_set:
            if not word:
                word = ("is not allowed to be empty" if found
                        else "is not allowed to be unset")
            raise ShellLexError(f"{name}: {word}")
        return value


def _process(word: str, env: Mapping[str, str], escape: str) -> tuple[str, list[str]]:
    try:
        return _Scanner(word, env, escape).stop_on("")
    except ShellLexError as exc:
        raise ShellLexError(f"failed to process {_go_quote(word)}: {exc}") from None


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def process_word(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """The word with quotes removed and variables replaced; whitespace kept."""
    return _process(word, env, escape)[0]


def process_words(word: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Like process_word, then split on unquoted whitespace (also inside values)."""
    return _process(word, env, escape)[1]
