import os
from pathlib import Path

import pytest

from stowd.engine.build.ignore import BadPattern, PatternMatcher, apply_ignore, read_ignore_file


def test_read_ignore_file() -> None:
    text = "\ufeff# comment\n  *.log  \n\n!keep.log\n/abs/path\n./rel//x/\n! spaced \n"
    assert read_ignore_file(text) == ["*.log", "!keep.log", "abs/path", "rel/x", "!spaced"]


@pytest.mark.parametrize(("patterns", "path", "ignored"), [
    (["*.log"], "a.log", True),
    (["*.log"], "d/a.log", False),  # `*` stays in one directory
    (["**/*.log"], "d/e/a.log", True),
    (["**/*.log"], "a.log", True),
    (["d"], "d/e/f", True),  # a parent matches
    (["d/**"], "d/e/f", True),
    (["d/**"], "d", False),
    (["**"], "anything/at/all", True),
    (["a?c"], "abc", True),
    (["a?c"], "a/c", False),
    (["[ab].txt"], "b.txt", True),
    (["[ab].txt"], "c.txt", False),
    (["*.log", "!keep.log"], "keep.log", False),
    (["*.log", "!keep.log"], "other.log", True),
    (["d", "!d/keep"], "d/keep", False),
    (["d", "!d/keep"], "d/other", True),
    (["!x", "*"], "x", True),  # the last matching pattern decides
    (["a.b"], "axb", False),  # `.` is literal
    (["a\\*b"], "a*b", True),
    (["a\\*b"], "axb", False),
    (["foo/**/bar"], "foo/bar", True),
    (["foo/**/bar"], "foo/x/y/bar", True),
])
def test_matches(patterns: list[str], path: str, ignored: bool) -> None:
    assert PatternMatcher(patterns).matches(path) is ignored


def test_bad_exclusion() -> None:
    with pytest.raises(BadPattern):
        PatternMatcher(["!"])


def test_apply_ignore(tmp_path: Path) -> None:
    for rel in ("a.log", "keep.log", "src/x.py", "src/x.pyc", "d/keep", "d/drop",
                "node_modules/m/i.js", "Dockerfile"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    os.symlink("src", tmp_path / "link")
    apply_ignore(tmp_path, ["*.log", "!keep.log", "**/*.pyc", "d", "!d/keep",
                            "node_modules", "link"])
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["Dockerfile", "d", "d/keep", "keep.log", "src", "src/x.py"]
