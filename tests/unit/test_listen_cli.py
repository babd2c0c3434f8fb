"""`stowd` flags: parsing into Settings, usage errors with hints, refusals before any state."""

from pathlib import Path

import pytest

from stowd import __version__
from stowd.cli import build_parser, main, settings_from
from stowd.config import DEFAULT_HOST


def test_defaults() -> None:
    s = settings_from(build_parser().parse_args(["serve"]))
    assert s.hosts == [DEFAULT_HOST]
    assert s.data_root == Path("/var/lib/stowd") and s.exec_root == Path("/run/stowd")
    assert s.runtime == "runc" and s.log_level == "info"
    assert not s.tls_verify and not s.insecure_tcp
    assert s.socket_group == "docker"


def test_dockerd_style_flags(tmp_path: Path) -> None:
    args = build_parser().parse_args([
        "serve", "-H", "unix:///tmp/a.sock", "--host", "tcp://127.0.0.1:2375",
        "--data-root", str(tmp_path / "d"), "--exec-root", str(tmp_path / "e"),
        "--runtime", "crun", "--tlsverify", "--tlscacert", "ca.pem", "--tlscert", "c.pem",
        "--tlskey", "k.pem", "-G", "wheel", "-D"])
    s = settings_from(args)
    assert s.hosts == ["unix:///tmp/a.sock", "tcp://127.0.0.1:2375"]
    assert s.data_root == tmp_path / "d" and s.exec_root == tmp_path / "e"
    assert s.runtime == "crun" and s.log_level == "debug" and s.socket_group == "wheel"
    assert s.tls_verify and s.tls_ca_cert == Path("ca.pem") and s.tls_key == Path("k.pem")


@pytest.mark.parametrize(("level", "stored"), [("warn", "warning"), ("fatal", "critical"),
                                               ("error", "error")])
def test_log_level_aliases(level: str, stored: str) -> None:
    assert settings_from(build_parser().parse_args(["serve", "--log-level", level])
                         ).log_level == stored


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"stowd {__version__} (API 1.44, minimum 1.24)\n"


def test_version_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"stowd {__version__}\nAPI version 1.44 (minimum 1.24)\n"


@pytest.mark.parametrize(("argv", "message", "hint"), [
    ([], "a command is required: 'stowd serve' runs the engine", "stowd --help"),
    (["frob"], "invalid choice: 'frob'", "stowd --help"),
    (["serve", "--bogus"], "unrecognized arguments: --bogus", "stowd serve --help"),
    (["--bogus", "serve"], "unrecognized arguments: --bogus", "stowd serve --help"),
    (["serve", "--runtime", "kata"], "invalid choice: 'kata'", "stowd serve --help"),
    (["serve", "-H"], "expected one argument", "stowd serve --help"),
])
def test_usage_errors_say_what_to_do(argv: list[str], message: str, hint: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ")
    assert message in err
    assert f"Run '{hint}' for the accepted flags." in err


@pytest.mark.parametrize(("argv", "message"), [
    (["-H", "tcp://0.0.0.0:2375"], "refusing to serve the Docker API without TLS"),
    (["-H", "tcp://127.0.0.1:2375", "--tlscert", "/nope"], "without --tlsverify"),
    (["-H", "tcp://127.0.0.1:2375", "--tlsverify"], "--tlsverify needs --tlscacert"),
    (["-H", "ssh://host"], "invalid listen address 'ssh://host'"),
])
def test_refusals_happen_before_any_state(argv: list[str], message: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data_root, exec_root = tmp_path / "data", tmp_path / "exec"
    code = main(["serve", "--data-root", str(data_root), "--exec-root", str(exec_root), *argv])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("stowd: ") and message in err
    assert not data_root.exists() and not exec_root.exists()


def test_help_lists_every_daemon_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("-H ADDR, --host ADDR", "--data-root DIR", "--exec-root DIR", "--runtime",
                 "--log-level", "--tlsverify", "--tlscacert FILE", "--tlscert FILE",
                 "--tlskey FILE", "--insecure-tcp", "listening safely:"):
        assert flag in out
