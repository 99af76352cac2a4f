"""The client profile (consumer/profile.py), the call signature the channels
add (consumer/signer.py) and the CLI's reading of both; no sockets."""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path

import pytest

from consumer.profile import ENV, PLAINTEXT, ClientSecurity, Profile, client_setup
from consumer.signer import Signature
from core.errors import ConfigError, UnauthenticatedError
from core.security.certs import CertificateAuthority
from core.security.signing import verify
from deploy.client_cli import TargetError, add_produce_arguments, client_target

pytestmark = pytest.mark.unit
SECRET = "s3cret-s3cret-s3cret"
SEND = "/tailrace.v1.Broker/Send"


@pytest.fixture(scope="module")
def ca_pem() -> bytes:
    return CertificateAuthority.create("test CA").pem


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def good(tmp_path: Path, ca_pem: bytes) -> Path:
    (tmp_path / "tls").mkdir(exist_ok=True)
    (tmp_path / "tls" / "ca.pem").write_bytes(ca_pem)
    return write(
        tmp_path / "client.toml",
        f'namesrv = ["127.0.0.1:41234", "127.0.0.1:41235"]\n'
        f'ca_file = "tls/ca.pem"\n'  # relative: to the profile's directory
        f'access_key = "admin"\nsecret_key = "{SECRET}"\nserver_name = "nameserver.c1.tailrace.member"\n',
    )


def test_a_good_profile_loads_into_what_the_channels_need(tmp_path: Path, ca_pem: bytes) -> None:
    p = Profile.load(good(tmp_path, ca_pem))
    assert p.namesrv == ("127.0.0.1:41234", "127.0.0.1:41235")
    assert p.ca_file == str(tmp_path / "tls" / "ca.pem")
    s = p.security()
    assert (s.tls, s.signed, s.ca_pem, s.server_name) == (True, True, ca_pem, "nameserver.c1.tailrace.member")
    assert (s.access_key, s.secret_key, s.ca_file) == ("admin", SECRET, p.ca_file)
    assert SECRET not in repr(p) and SECRET not in repr(s)  # a logged profile leaks no secret


def test_every_key_is_optional_and_an_empty_profile_is_plaintext(tmp_path: Path) -> None:
    p = Profile.load(write(tmp_path / "p.toml", ""))
    assert p.namesrv == () and p.security() == PLAINTEXT == ClientSecurity.plaintext()
    assert not PLAINTEXT.tls and not PLAINTEXT.signed
    unsigned = Profile.load(write(tmp_path / "q.toml", 'namesrv = ["h:1"]\nca_file = ""\n'))
    assert unsigned.security() == PLAINTEXT  # "" is the same as left out


def test_a_profile_others_may_read_is_refused_naming_the_file(tmp_path: Path, ca_pem: bytes) -> None:
    path = good(tmp_path, ca_pem)
    for mode in (0o640, 0o604, 0o644):
        os.chmod(path, mode)
        with pytest.raises(ConfigError, match=r"readable by others.*chmod 600") as info:
            Profile.load(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('namesrv = ["h:1"]\nnamesrvs = ["h:2"]\n', r"unknown key\(s\) \['namesrvs'\]"),
        ('namesrv = "h:1,h:2"\n', "namesrv: must be a list"),
        ("namesrv = [1234]\n", "namesrv: must be a list"),
        ('namesrv = ["nohostport"]\n', "namesrv: must be a list"),
        ("access_key = 7\nsecret_key = 'x'\n", "access_key: must be a string, not int"),
        ("server_name = true\n", "server_name: must be a string, not bool"),
        ('access_key = "admin"\n', "access_key and secret_key together"),
        ('secret_key = "x"\n', "access_key and secret_key together"),
        ('access_key = "a b"\nsecret_key = "x"\n', r"access_key: must match"),
        ('ca_file = "/nonexistent/ca.pem"\n', "ca_file: cannot read /nonexistent/ca.pem"),
        ('ca_file = "not-pem.txt"\n', "is not a PEM certificate"),
        ("namesrv = [\n", "not valid TOML"),
    ],
)
def test_a_bad_profile_is_refused_saying_which_file_and_what(
    tmp_path: Path, text: str, complaint: str
) -> None:
    (tmp_path / "not-pem.txt").write_text("hello")
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match=complaint) as info:
        Profile.load(path)
    assert str(info.value).startswith(f"CONFIG: profile {path}")


def test_a_missing_profile_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Profile.load(tmp_path / "none.toml")


def test_the_profile_comes_from_the_argument_else_the_environment_else_plaintext(
    tmp_path: Path, ca_pem: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = good(tmp_path, ca_pem)
    monkeypatch.delenv(ENV, raising=False)
    assert Profile.from_env() is None
    security, broker, namesrv = client_setup(None, None, ["n:1"])
    assert security == PLAINTEXT and (broker, namesrv) == (None, ["n:1"])
    monkeypatch.setenv(ENV, str(path))
    assert Profile.from_env() == Profile.load(path)
    security, broker, namesrv = client_setup(None, None, None)  # no target given: the profile's
    assert security.signed and namesrv == ["127.0.0.1:41234", "127.0.0.1:41235"]
    _, broker, namesrv = client_setup(None, "b:1", None)  # one given: kept
    assert (broker, namesrv) == ("b:1", None)
    loaded = Profile.load(path)
    assert Profile.resolve(loaded) is loaded and Profile.resolve(str(path)) == loaded
    monkeypatch.setenv(ENV, str(tmp_path / "none.toml"))
    with pytest.raises(ConfigError):  # a profile named but missing is an error, not plaintext
        client_setup(None, "b:1", None)


def test_a_signature_verifies_for_its_method_and_time_only() -> None:
    ticks = iter([1000.0, 1000.0005, 1000.002, 1000.003])
    sig = Signature("admin", SECRET, clock=lambda: next(ticks))
    md = sig(SEND)
    assert sig(SEND) is md  # the same millisecond: the same tuple
    later = sig(SEND)
    assert later != md  # another millisecond: signed again

    def secret_of(ak: str) -> str | None:
        return SECRET if ak == "admin" else None

    account = verify(md, SEND, 1_000_000, secret_of)
    assert account is not None and account.access_key == "admin"
    with pytest.raises(UnauthenticatedError, match="does not verify"):
        verify(md, "/tailrace.v1.Broker/CreateTopic", 1_000_000, secret_of)  # not another method's
    both = sig("/m", (("x-trace", "1"),))
    assert both[0] == ("x-trace", "1") and [k for k, _ in both[1:]] == ["x-tailrace-date", "authorization"]


def test_the_signature_cache_does_not_grow_without_bound() -> None:
    ticks = itertools.count()
    sig = Signature("admin", SECRET, clock=lambda: next(ticks) / 1000)
    for i in range(1000):
        sig(f"/m/{i}")
    assert len(sig._last) <= 256


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_produce_arguments(p)
    return p.parse_args(["--topic", "t", "--count", "1", *argv])


def test_the_cli_takes_its_target_from_the_profile_and_names_a_bad_one(
    tmp_path: Path, ca_pem: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    path = good(tmp_path, ca_pem)
    profile, broker, namesrv = client_target(_args("--profile", str(path)))
    assert profile.security().signed and broker is None and namesrv == "127.0.0.1:41234,127.0.0.1:41235"
    _, broker, namesrv = client_target(_args("--profile", str(path), "--broker", "b:1"))
    assert (broker, namesrv) == ("b:1", None)
    monkeypatch.setenv(ENV, str(path))
    assert client_target(_args())[2] == "127.0.0.1:41234,127.0.0.1:41235"
    os.chmod(path, 0o644)
    with pytest.raises(
        TargetError, match=rf"bad client profile {path} \(from \$TAILRACE_PROFILE\): .*chmod 600"
    ):
        client_target(_args())
    bad = write(tmp_path / "bad.toml", "namesrv = 5\n")
    with pytest.raises(TargetError, match=rf"bad client profile {bad} \(from --profile\): namesrv: must be"):
        client_target(_args("--profile", str(bad)))
    monkeypatch.delenv(ENV)
    with pytest.raises(TargetError, match="give --broker or --namesrv"):
        client_target(_args())
    empty = write(tmp_path / "empty.toml", "")
    with pytest.raises(TargetError, match="names no namesrv"):
        client_target(_args("--profile", str(empty)))
    assert client_target(_args("--namesrv", "n:1"))[0].security() == PLAINTEXT


def test_a_signed_client_speaks_plaintext_to_loopback_only() -> None:
    from consumer.channels import open_channel
    from consumer.profile import ClientSecurity
    from core.errors import ConfigError

    signed = ClientSecurity(access_key="a", secret_key="0123456789abcdef")
    open_channel("127.0.0.1:1", signed).close()  # the development setup
    with pytest.raises(ConfigError, match="without TLS"):
        open_channel("10.1.2.3:1", signed)
    open_channel("10.1.2.3:1", ClientSecurity()).close()  # unsigned: nothing to replay
