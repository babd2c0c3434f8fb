"""Create-request validation and Docker's merge of image defaults."""

import pytest

from stowd.engine import create as rules
from stowd.engine.errors import InvalidParameter


def test_cmd_and_entrypoint_accept_strings_from_old_clients() -> None:
    cfg = rules.normalize_config({"Image": "x", "Cmd": "echo hi", "Entrypoint": "/init"})
    assert cfg["Cmd"] == ["echo hi"] and cfg["Entrypoint"] == ["/init"]


@pytest.mark.parametrize("body", [
    {"Image": 5},
    {"Image": "x", "Cmd": 5},
    {"Image": "x", "Env": "A=1"},
    {"Image": "x", "Env": ["=bad"]},
    {"Image": "x", "Labels": {"a": 1}},
    {"Image": "x", "Tty": "yes"},
    {"Image": "x", "WorkingDir": "relative"},
    {"Image": "x", "StopTimeout": "10"},
])
def test_malformed_config_is_invalid(body: dict[str, object]) -> None:
    with pytest.raises(InvalidParameter):
        rules.normalize_config(body)


def test_restart_policy_rules() -> None:
    assert rules.validate_restart_policy(None, False) == {"Name": "no", "MaximumRetryCount": 0}
    assert rules.validate_restart_policy({"Name": ""}, False)["Name"] == "no"
    assert rules.validate_restart_policy({"Name": "on-failure", "MaximumRetryCount": 3},
                                         False)["MaximumRetryCount"] == 3
    with pytest.raises(InvalidParameter, match="unknown policy 'x'"):
        rules.validate_restart_policy({"Name": "x"}, False)
    with pytest.raises(InvalidParameter, match="only be used with 'on-failure'"):
        rules.validate_restart_policy({"Name": "always", "MaximumRetryCount": 1}, False)
    with pytest.raises(InvalidParameter, match="AutoRemove"):
        rules.validate_restart_policy({"Name": "always"}, True)


def test_host_config_defaults_and_validation() -> None:
    hc = rules.normalize_host_config({"Memory": 64 << 20}, "runc")
    assert hc["NetworkMode"] == "default" and hc["ShmSize"] == 64 << 20
    assert hc["Memory"] == 64 << 20 and hc["Runtime"] == "runc"
    for bad in ({"Memory": 1024}, {"ConsoleSize": [1]}, {"Binds": ["relative"]},
                {"Memory": -1}):
        with pytest.raises(InvalidParameter):
            rules.normalize_host_config(bad, "runc")


def test_merge_image_defaults_like_docker() -> None:
    image = {"Env": ["PATH=/bin", "A=image"], "Cmd": ["sh"], "Entrypoint": ["/entry"],
             "WorkingDir": "/srv", "User": "app", "ExposedPorts": {"80/tcp": {}},
             "Labels": {"a": "image", "b": "image"}, "StopSignal": "SIGQUIT"}
    merged = rules.merge_image_defaults(
        {"Env": ["A=user"], "Labels": {"a": "user"}, "ExposedPorts": {"443/tcp": {}}}, image)
    assert merged["Env"] == ["PATH=/bin", "A=user"]
    assert merged["Labels"] == {"a": "user", "b": "image"}
    assert merged["ExposedPorts"] == {"80/tcp": {}, "443/tcp": {}}
    assert merged["Cmd"] == ["sh"] and merged["Entrypoint"] == ["/entry"]
    assert (merged["WorkingDir"], merged["User"], merged["StopSignal"]) == ("/srv", "app",
                                                                          "SIGQUIT")
    # A user Cmd keeps the image's entrypoint; a user entrypoint drops the image's Cmd.
    assert rules.merge_image_defaults({"Cmd": ["x"]}, image)["Entrypoint"] == ["/entry"]
    with_ep = rules.merge_image_defaults({"Entrypoint": ["/mine"]}, image)
    assert with_ep.get("Cmd") is None and with_ep["Entrypoint"] == ["/mine"]
    # An explicit empty entrypoint clears the image's (`--entrypoint ""`).
    cleared = rules.merge_image_defaults({"Entrypoint": [], "Cmd": ["ls"]}, image)
    assert cleared["Entrypoint"] == [] and cleared["Cmd"] == ["ls"]


def test_entrypoint_and_args() -> None:
    assert rules.entrypoint_and_args({"Entrypoint": ["/a", "-x"], "Cmd": ["y"]}) == (
        "/a", ["-x", "y"])
    with pytest.raises(InvalidParameter, match="No command specified"):
        rules.entrypoint_and_args({"Entrypoint": None, "Cmd": None})
