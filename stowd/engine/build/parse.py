"""Dockerfile → instructions, through BuildKit's own parser (the `dockerfile` package).

The package gives each instruction's words, flags, JSON form and heredocs as BuildKit's Go
parser reads them (escape directive, continuations, comments). This module adds the
instruction-level checks of BuildKit's `instructions/parse.go` (as dockerd's classic
builder runs them) with dockerd's words: `dockerfile parse error line N: ...`.
"""

import re
from dataclasses import dataclass, field

import dockerfile

from stowd.engine import timespec
from stowd.engine.errors import InvalidParameter

KNOWN = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
})
_FLAGS: dict[str, frozenset[str]] = {
    "FROM": frozenset({"platform"}),
    "COPY": frozenset({"from", "chown", "chmod"}),
    "ADD": frozenset({"chown", "chmod"}),
    "HEALTHCHECK": frozenset({"interval", "timeout", "start-period", "start-interval",
                              "retries"}),
}
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")


class DockerfileError(InvalidParameter):
    pass


@dataclass(frozen=True)
class Heredoc:
    name: str
    content: str


@dataclass
class Instruction:
    name: str  # upper case
    args: list[str]
    json: bool
    original: str
    line: int
    flags: dict[str, str] = field(default_factory=dict)
    heredocs: list[Heredoc] = field(default_factory=list)
    trigger: "Instruction | None" = None  # ONBUILD's instruction

    def error(self, message: str) -> DockerfileError:
        return DockerfileError(f"dockerfile parse error line {self.line}: {message}")


@dataclass
class Stage:
    base: str  # unexpanded: ARGs declared before the first FROM apply
    name: str  # lower case, "" when unnamed
    platform: str
    index: int
    instruction: Instruction
    commands: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    escape: str
    meta_args: list[Instruction]  # ARGs before the first FROM
    stages: list[Stage]


def directives(text: str) -> dict[str, str]:
    """The parser directives (`# escape=`, `# syntax=`) at the top of a Dockerfile."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _DIRECTIVE.match(line)
        if not m:
            break
        key = m.group(1).lower()
        if key in out:
            break
        out[key] = m.group(2)
    return out


def _flags(ins: Instruction, raw: tuple[str, ...]) -> dict[str, str]:
    allowed = _FLAGS.get(ins.name, frozenset())
    out: dict[str, str] = {}
    for text in raw:
        name, _, value = text.removeprefix("--").partition("=")
        if name not in allowed:
            raise ins.error(f"Unknown flag: {name}")
        out[name] = value
    return out


def _instruction(cmd: "dockerfile.Command", sub: bool = False) -> Instruction:
    name = (cmd.sub_cmd if sub else cmd.cmd).upper()
    original = cmd.original
    if sub:
        original = original.split(None, 1)[1] if len(original.split(None, 1)) > 1 else ""
    ins = Instruction(name=name, args=list(cmd.value), json=cmd.json, original=original,
                      line=cmd.start_line,
                      heredocs=[Heredoc(h.name, h.content) for h in cmd.heredocs])
    if name not in KNOWN:
        raise ins.error(f"unknown instruction: {name}")
    ins.flags = _flags(ins, cmd.flags if not sub else ())
    _check(ins)
    return ins


def _check(ins: Instruction) -> None:
    n = len(ins.args)
    name = ins.name
    if name in ("ENV", "LABEL", "EXPOSE", "VOLUME", "ARG", "ONBUILD") and n == 0:
        raise ins.error(f"{name} requires at least one argument")
    if name in ("ENV", "LABEL"):
        for key in ins.args[::2]:
            if not key:
                raise ins.error(f"{name} names can not be blank")
    if name in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER") and n != 1:
        raise ins.error(f"{name} requires exactly one argument")
    if name == "FROM" and n not in (1, 3):
        raise ins.error("FROM requires either one or three arguments")
    if name == "FROM" and n == 3:
        if ins.args[1].upper() != "AS":
            raise ins.error("FROM requires either one or three arguments")
        stage = ins.args[2].lower()
        if not _STAGE_NAME.match(stage):
            raise ins.error(f'invalid name for build stage: "{ins.args[2]}", name can\'t '
                            "start with a number or contain symbols")
    if name in ("COPY", "ADD") and n < 2:
        raise ins.error(f"{name} requires at least two arguments, but only one was provided. "
                        "Destination could not be determined")
    if name == "SHELL" and not ins.json:
        raise ins.error("SHELL requires the arguments to be in JSON form")
    if name == "SHELL" and n == 0:
        raise ins.error("SHELL requires at least one argument")
    if name == "HEALTHCHECK":
        if n == 0:
            raise ins.error("HEALTHCHECK requires an argument")
        kind = ins.args[0].upper()
        if kind == "NONE":
            if n != 1:
                raise ins.error("HEALTHCHECK NONE takes no arguments")
        elif kind != "CMD":
            raise ins.error(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
        elif n == 1 and not ins.json:
            raise ins.error("Missing command after HEALTHCHECK CMD")
        for key in ("interval", "timeout", "start-period", "start-interval"):
            if ins.flags.get(key):
                parse_duration(ins.flags[key], ins)
        if ins.flags.get("retries"):
            try:
                retries = int(ins.flags["retries"])
            except ValueError:
                raise ins.error(f'strconv.ParseInt: parsing "{ins.flags["retries"]}": '
                                "invalid syntax") from None
            if retries < 1:
                raise ins.error(f"--retries cannot be negative ({retries})")


def parse_duration(text: str, ins: Instruction) -> int:
    """A HEALTHCHECK flag's Go duration in nanoseconds (timespec's parser, this
    instruction's error)."""
    try:
        return timespec.parse_duration(text)
    except InvalidParameter:
        raise ins.error(f'time: invalid duration "{text}"') from None


def parse(text: str) -> Dockerfile:
    escape = directives(text).get("escape", "\\")
    try:
        commands = dockerfile.parse_string(text)
    except dockerfile.GoParseError as exc:
        raise DockerfileError(f"failed to parse Dockerfile: {exc}") from None
    meta: list[Instruction] = []
    stages: list[Stage] = []
    for cmd in commands:
        ins = _instruction(cmd)
        if ins.name == "ONBUILD":
            if not cmd.sub_cmd:
                raise ins.error("ONBUILD requires at least one argument")
            sub = cmd.sub_cmd.upper()
            if sub == "ONBUILD":
                raise ins.error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
            if sub in ("FROM", "MAINTAINER"):
                raise ins.error(f"{sub} isn't allowed as an ONBUILD trigger")
            ins.trigger = _instruction(cmd, sub=True)
        if ins.name == "FROM":
            name = ins.args[2].lower() if len(ins.args) == 3 else ""
            stages.append(Stage(base=ins.args[0], name=name,
                                platform=ins.flags.get("platform", ""), index=len(stages),
                                instruction=ins))
        elif not stages:
            if ins.name != "ARG":
                raise DockerfileError("no build stage in current context")
            meta.append(ins)
        else:
            stages[-1].commands.append(ins)
    if not commands:
        raise DockerfileError("failed to parse Dockerfile: file with no instructions")
    if not stages:
        raise DockerfileError("no build stage in current context")
    return Dockerfile(escape=escape, meta_args=meta, stages=stages)


def parse_trigger(text: str) -> Instruction:
    """One ONBUILD trigger as an image stores it (`RUN echo x`)."""
    try:
        commands = dockerfile.parse_string(text + "\n")
    except dockerfile.GoParseError as exc:
        raise DockerfileError(f"failed to parse Dockerfile: {exc}") from None
    if len(commands) != 1:
        raise DockerfileError(f"invalid ONBUILD trigger: {text}")
    return _instruction(commands[0])
