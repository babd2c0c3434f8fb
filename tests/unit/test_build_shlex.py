import pytest

from stowd.engine.build.shlex import ShellLexError, process_word, process_words

ENV = {"A": "a", "B": "two words", "E": "", "PATH": "/bin"}


@pytest.mark.parametrize(("word", "expected"), [
    ("$A", "a"),
    ("${A}", "a"),
    ("x${A}y", "xay"),
    ("$A$A", "aa"),
    ("$NOPE", ""),
    ("${NOPE:-dflt}", "dflt"),
    ("${E:-dflt}", "dflt"),
    ("${E-dflt}", ""),
    ("${NOPE-dflt}", "dflt"),
    ("${A:-dflt}", "a"),
    ("${A:+alt}", "alt"),
    ("${E:+alt}", ""),
    ("${E+alt}", "alt"),
    ("${NOPE:+alt}", ""),
    ("${NOPE:-$A}", "a"),
    ("'$A'", "$A"),
    ('"$A"', "a"),
    ('"a b"', "a b"),
    ("a b", "a b"),
    (r"\$A", "$A"),
    (r'"\$A"', "$A"),
    (r'"\x"', r"\x"),
    (r"a\ b", "a b"),
    ("$", "$"),
    ("a$", "a$"),
    ("$1", ""),
    ("${PATH}:/x", "/bin:/x"),
    ('"${B}"', "two words"),
])
def test_process_word(word: str, expected: str) -> None:
    assert process_word(word, ENV) == expected


def test_backtick_escape() -> None:
    assert process_word("a`$A", ENV, escape="`") == "a$A"
    assert process_word(r"c:\dir", ENV, escape="`") == r"c:\dir"


@pytest.mark.parametrize(("word", "expected"), [
    ("a b  c", ["a", "b", "c"]),
    ("$B x", ["two", "words", "x"]),
    ('"$B" x', ["two words", "x"]),
    ("'a b'", ["a b"]),
    ("80/tcp ${P:-90}", ["80/tcp", "90"]),
])
def test_process_words(word: str, expected: list[str]) -> None:
    assert process_words(word, ENV) == expected


@pytest.mark.parametrize(("word", "message"), [
    ("${A", "missing '}'"),
    ("${}", "bad substitution"),
    ("${A:%x}", "unsupported modifier (%) in substitution"),
    ("${NOPE:?must be set}", "NOPE: must be set"),
    ("${E:?}", "E: is not allowed to be empty"),
    ("${NOPE?}", "NOPE: is not allowed to be unset"),
    ("'abc", "single-quote"),
    ('"abc', "double-quote"),
])
def test_errors(word: str, message: str) -> None:
    with pytest.raises(ShellLexError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("$", r"\$").replace("?", r"\?")):
        process_word(word, ENV)
