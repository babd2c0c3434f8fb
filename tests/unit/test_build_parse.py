import pytest

from stowd.engine.build.parse import DockerfileError, parse, parse_trigger


def test_stages_and_meta_args() -> None:
    df = parse("ARG V=1\nFROM busybox:${V} AS Base\nRUN echo \\\n  hi\n"
               "FROM base\nCOPY --from=base --chown=1:2 /a /b\n")
    assert [a.args for a in df.meta_args] == [["V=1"]]
    assert [(s.base, s.name) for s in df.stages] == [("busybox:${V}", "base"), ("base", "")]
    run = df.stages[0].commands[0]
    assert (run.name, run.args, run.line) == ("RUN", ["echo   hi"], 3)
    copy = df.stages[1].commands[0]
    assert copy.flags == {"from": "base", "chown": "1:2"}
    assert copy.args == ["/a", "/b"]


def test_escape_directive_and_json() -> None:
    df = parse('# escape=`\nFROM x\nRUN echo a `\n  b\nCMD ["sh", "-c"]\n')
    assert df.escape == "`"
    run, cmd = df.stages[0].commands
    assert run.args == ["echo a   b"]
    assert cmd.json and cmd.args == ["sh", "-c"]


def test_onbuild_trigger() -> None:
    df = parse("FROM x\nONBUILD RUN echo hi\n")
    ins = df.stages[0].commands[0]
    assert ins.trigger is not None and ins.trigger.name == "RUN"
    assert ins.trigger.original == "RUN echo hi"
    assert parse_trigger("COPY a /b").args == ["a", "/b"]


def test_heredoc() -> None:
    df = parse("FROM x\nRUN <<EOF\necho hi\nEOF\n")
    assert df.stages[0].commands[0].heredocs[0].content == "echo hi\n"


@pytest.mark.parametrize(("text", "message"), [
    ("FROM x\nBOGUS y\n", "dockerfile parse error line 2: unknown instruction: BOGUS"),
    ("FROM x\nENV\n", "dockerfile parse error line 2: ENV requires at least one argument"),
    ("FROM x\nENV a\n", "failed to parse Dockerfile: ENV must have two arguments"),
    ("FROM x\nCOPY a\n", "dockerfile parse error line 2: COPY requires at least two "
                         "arguments, but only one was provided. Destination could not be "
                         "determined"),
    ("FROM\n", "dockerfile parse error line 1: FROM requires either one or three arguments"),
    ("FROM x AS 1bad\n", 'invalid name for build stage: "1bad"'),
    ("FROM x\nCOPY --bogus=1 a b\n", "dockerfile parse error line 2: Unknown flag: bogus"),
    ("FROM x\nONBUILD FROM y\n", "FROM isn't allowed as an ONBUILD trigger"),
    ("FROM x\nONBUILD ONBUILD RUN y\n", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't "
                                        "allowed"),
    ("FROM x\nSHELL sh\n", "SHELL requires the arguments to be in JSON form"),
    ("FROM x\nHEALTHCHECK FOO\n", 'Unknown type "FOO" in HEALTHCHECK (try CMD)'),
    ("FROM x\nHEALTHCHECK --interval=x CMD true\n", 'time: invalid duration "x"'),
    ("FROM x\nWORKDIR\n", "WORKDIR requires exactly one argument"),
    ("RUN x\n", "no build stage in current context"),
    ("# just a comment\n", "file with no instructions"),
])
def test_errors(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    assert message in str(info.value)
