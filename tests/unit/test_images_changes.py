"""`changes` of docker import: what dockerd 20.10 made of each line (asked of it directly)."""

from typing import Any

import pytest

from stowd.engine.errors import InvalidParameter
from stowd.engine.images.archive import apply_changes, import_config
from stowd.engine.timespec import parse_duration


@pytest.mark.parametrize(("change", "expected"), [
    ("CMD echo hi", {"Cmd": ["/bin/sh", "-c", "echo hi"]}),
    ("CMD echo $HOME", {"Cmd": ["/bin/sh", "-c", "echo $HOME"]}),
    ('cmd ["a","b"]', {"Cmd": ["a", "b"]}),
    ("CMD", {"Cmd": ["/bin/sh", "-c"]}),
    ("  CMD x", {"Cmd": ["/bin/sh", "-c", "x"]}),
    ("ENTRYPOINT echo", {"Entrypoint": ["/bin/sh", "-c", "echo"]}),
    ('ENTRYPOINT ["/bin/sh","-c"]', {"Entrypoint": ["/bin/sh", "-c"]}),
    ("ENV A 1 2", {"Env": ["A=1 2"]}),
    ('ENV A="x y" B=2', {"Env": ["A=x y", "B=2"]}),
    ('LABEL "k k"="v v"', {"Labels": {"k k": "v v"}}),
    ("EXPOSE 80 443/udp", {"ExposedPorts": {"80/tcp": {}, "443/udp": {}}}),
    ("EXPOSE 80-82", {"ExposedPorts": {"80/tcp": {}, "81/tcp": {}, "82/tcp": {}}}),
    ("VOLUME /a /b", {"Volumes": {"/a": {}, "/b": {}}}),
    ('VOLUME ["/c"]', {"Volumes": {"/c": {}}}),
    ("WORKDIR /w", {"WorkingDir": "/w"}),
    ("WORKDIR rel", {"WorkingDir": "/rel"}),
    ("USER nobody", {"User": "nobody"}),
    ("ONBUILD RUN x", {"OnBuild": ["RUN x"]}),
    ("HEALTHCHECK CMD true", {"Healthcheck": {"Test": ["CMD-SHELL", "true"]}}),
    ('HEALTHCHECK --interval=5s --retries=3 CMD ["true"]',
     {"Healthcheck": {"Test": ["CMD", "true"], "Interval": 5_000_000_000, "Retries": 3}}),
    ("HEALTHCHECK NONE", {"Healthcheck": {"Test": ["NONE"]}}),
])
def test_change_lines(change: str, expected: dict[str, Any]) -> None:
    assert apply_changes({}, [change]) == expected


@pytest.mark.parametrize(("change", "message"), [
    ("FOO bar", "foo is not a valid change command"),
    ("RUN bar", "run is not a valid change command"),
    ("STOPSIGNAL SIGKILL", "stopsignal is not a valid change command"),
    ("MAINTAINER me", "maintainer is not a valid change command"),
    ("ENV", "ENV requires at least one argument"),
    ("ENV A", "ENV must have two arguments"),
    ("ENV A=1 B", "Syntax error - can't find = in \"B\". Must be of the form: name=value"),
    ("ENV =x", "ENV names can not be blank"),
    ("LABEL a", "LABEL must have two arguments"),
    ("EXPOSE", "EXPOSE requires at least one argument"),
    ("EXPOSE abc", "Invalid containerPort: abc"),
    ("EXPOSE 80/xyz", "Invalid proto: xyz"),
    ("USER", "USER requires exactly one argument"),
    ("HEALTHCHECK --bogus=1 CMD x", "Unknown flag: bogus"),
])
def test_bad_change_lines(change: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        apply_changes({}, [change])
    assert info.value.message == message


def test_later_changes_win_and_env_keys_are_replaced() -> None:
    config = apply_changes({}, ["ENV A=1 B=2", "ENV A=3", "CMD a", "CMD b", "WORKDIR /x",
                                "WORKDIR y"])
    assert config == {"Env": ["B=2", "A=3"], "Cmd": ["/bin/sh", "-c", "b"],
                      "WorkingDir": "/x/y"}


def test_import_config_records_message_and_diff_id() -> None:
    import json
    doc = json.loads(import_config("sha256:" + "a" * 64, ["CMD sh"], "hello"))
    assert doc["comment"] == "hello"
    assert doc["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]}
    assert doc["config"] == {"Cmd": ["/bin/sh", "-c", "sh"]}
    assert doc["os"] == "linux"


@pytest.mark.parametrize(("text", "ns"), [
    ("5s", 5_000_000_000), ("1m30s", 90_000_000_000), ("500ms", 500_000_000), ("0", 0),
    ("1.5h", 5_400_000_000_000),
])
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "5", "5x", "s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_duration(text)
