"""What ``voipgw check-config`` says of files and directories the service needs, when the user
running it may not be the service's (an operator checking as themselves before ``systemctl
reload``): what no user could use is an error of check-config and run; what only this user's
permissions forbid is check-config's warning naming the user, the key and the file (exit 0),
and run's error, naming the key. Errors first, then every warning, in one run.

The tests run as root, which may read and write anything: the kernel's answer to another user
is given by patching ``os.access`` and ``os.open`` (and ``Path.open``, which run's TLS check
uses). test_check_config_as_another_user.py checks as another user, with real permissions."""

from __future__ import annotations

import datetime
import fcntl
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core import cli
from gateway.core import config as config_mod
from gateway.core import gateway as gateway_mod
from gateway.core.config import ConfigError, from_mapping, user_name
from gateway.core.gateway import Gateway
from gateway.core.plugins import PluginError, load_plugins
from gateway.core.store import backends
from tests.interop.harness.pki import TestPki
from tests.unit.core.file_locks import locked_for_others

AS_ANOTHER_USER = (
    "the service's user may be allowed to; `voipgw run` as a user who may not refuses to "
    "start (check it as that user: sudo -u USER voipgw check-config FILE)"
)


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["check-config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def write_config(tmp_path: Path, state: Path, extra: str = "", enable: str = '"udp"') -> Path:
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{state}"\n[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        f"[plugins]\nenable = [{enable}]\n{extra}"
    )
    return path


def deny(monkeypatch: pytest.MonkeyPatch, denied: Path, modes: int) -> None:
    """``os.access`` answers no for ``denied`` and any of ``modes``, as to another user."""
    real_access = os.access

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if Path(path) == denied and mode & modes:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(config_mod.os, "access", access)
    if modes & os.R_OK:
        # What is checked for reading is tried (open(2)), not asked of access(2).
        real_open = os.open

        def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if Path(path) == denied and flags & (os.O_WRONLY | os.O_RDWR) == 0:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(config_mod.os, "open", open_)


def built(path: Path) -> Gateway:
    config = config_mod.from_toml(path)
    return Gateway(config, load_plugins(config))


# -- item: an existing state_dir this user may not write in --------------------------------


def test_an_existing_state_dir_this_user_may_not_write_is_check_configs_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It passed check-config without a word, then `voipgw run` stopped on the SQLite
    store's file, naming neither the key nor the user."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    path = write_config(tmp_path, state)
    deny(monkeypatch, state, os.W_OK)
    code, out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err
    # Owned by this user: the service's, not named.
    assert "the service's user may be allowed to" in err and "sudo -u USER" in err
    monkeypatch.setattr(gateway_mod, "owner_name", lambda p: "voipgw")  # who ran voipgw run
    code, out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [gateway] state_dir: {state} is not writable by this user "
        f"({user_name()}), who runs check-config: the SQLite store "
        f"({state / 'voipgw.sqlite3'}) cannot be opened by this user; its owner, voipgw, may "
        "be allowed to; `voipgw run` as a user who is not refuses to start (check it as that "
        "user: sudo -u voipgw voipgw check-config FILE)\n"
    )
    assert out.endswith("OK (1 plugins: udp)\n")
    # voipgw run, the service: an error naming the key, before anything starts (creating a
    # file there, tried, fails as for another user).
    monkeypatch.setattr(gateway_mod, "_creates_a_file_in", lambda p: False)
    with pytest.raises(ConfigError) as caught:
        built(path).check()
    assert (caught.value.table, caught.value.key) == ("gateway", "state_dir")
    assert caught.value.message == (
        f"{state} is not writable by this user ({user_name()}): the SQLite store "
        f"({state / 'voipgw.sqlite3'}) cannot be opened"
    )


def test_an_existing_state_dir_on_a_read_only_file_system_is_an_error_of_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No user may write there, root included (review-5's "cannot be created" case)."""
    state = tmp_path / "state"
    state.mkdir()
    path = write_config(tmp_path, state)
    real_statvfs = config_mod.os.statvfs

    class ReadOnly:
        f_flag = config_mod.os.ST_RDONLY

    monkeypatch.setattr(
        config_mod.os, "statvfs", lambda p: ReadOnly() if Path(p) == state else real_statvfs(p)
    )
    deny(monkeypatch, state, os.W_OK)  # what a read-only mount answers, root included
    monkeypatch.setattr(config_mod, "mount_point", lambda p: Path("/srv/voipgw"))
    code, out, err = check_config(path, capsys)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert err == (
        f"voipgw: configuration error: {path}: [gateway] state_dir: {state} is on a read-only "
        "file system (mount /srv/voipgw read-write): the SQLite store "
        f"({state / 'voipgw.sqlite3'}) cannot be opened\n"
    )


def test_root_warns_of_a_state_dir_whose_owner_may_not_write_in_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root may write anywhere, so its own answer says nothing; the mode says the owner (the
    user `voipgw run` created it as, most likely) may not."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o500)
    path = write_config(tmp_path, state)
    monkeypatch.setattr(config_mod.os, "geteuid", lambda: 0)
    real_stat = config_mod.os.stat

    def stat(p: Any, *args: Any, **kwargs: Any) -> Any:
        result = real_stat(p, *args, **kwargs)
        if Path(p) == state:  # owned by a service's user, uid 4321
            return os.stat_result((result.st_mode, *result[1:4], 4321, *result[5:]))
        return result

    monkeypatch.setattr(config_mod.os, "stat", stat)
    code, out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [gateway] state_dir: {state} is writable by root only "
        f"(mode 0500): its owner, uid 4321, may not write in it, so the SQLite store "
        f"({state / 'voipgw.sqlite3'}) cannot be opened as uid 4321; `voipgw run` as uid 4321 "
        f"refuses to start (chmod u+wx {state}, or check it as the service's user: sudo -u "
        "USER voipgw check-config FILE)\n"
    )
    state.chmod(0o700)
    code, out, err = check_config(path, capsys)
    assert (code, err) == (cli.EXIT_OK, ""), out


def test_a_postgresql_gateways_state_dir_is_not_checked_for_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It holds only the control socket, without which the gateway runs (warned of): earlier
    releases ran so, and still do."""
    pytest.importorskip("psycopg")
    state = tmp_path / "state"
    state.mkdir()
    path = write_config(tmp_path, state, '[store]\nbackend = "postgresql"\ndsn = "dbname=x"\n')
    deny(monkeypatch, state, os.W_OK)
    code, out, err = check_config(path, capsys)
    assert (code, err) == (cli.EXIT_OK, ""), out
    built(path).check()


# -- item: errors, then every warning, in one run -----------------------------------------


def test_check_config_with_errors_says_the_warnings_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator fixing a file one run at a time saw the state_dir and DID warnings only once
    the errors were gone: errors first, then the warnings, exit 2 as for the errors."""
    state = tmp_path / "lib" / "voipgw"
    (tmp_path / "lib").mkdir()
    path = write_config(
        tmp_path,
        state,
        '[dns]\ntimeout = 0.1\n[[trunks]]\nname = "a"\naddress = "udp:192.0.2.1:5060"\n'
        'dids = {"100" = "alice"}\n[[trunks]]\nname = "b"\naddress = "udp:192.0.2.2:5060"\n'
        'dids = {"100" = "bob"}\n',
    )
    deny(monkeypatch, tmp_path / "lib", os.W_OK)
    code, out, err = check_config(path, capsys)
    assert (code, out) == (cli.EXIT_USAGE, "")
    lines = err.splitlines()
    assert len(lines) == 3, err
    assert lines[0].startswith(f"voipgw: configuration error: {path}: [dns] timeout: 0.1 s ")
    assert lines[1].startswith(f"{path}: warning: DID ")
    assert lines[2].startswith(f"voipgw: warning: {path}: [gateway] state_dir: {state} cannot")


def test_check_config_stopped_by_an_error_says_the_warnings_found_before_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error that stops the check (a trunk's unknown media policy, checked after the state
    directories) comes with the warnings found before it."""
    state = tmp_path / "lib" / "voipgw"
    (tmp_path / "lib").mkdir()
    path = write_config(
        tmp_path,
        state,
        '[[trunks]]\nname = "a"\naddress = "udp:192.0.2.1:5060"\nmedia_policy = "nope"\n',
    )
    deny(monkeypatch, tmp_path / "lib", os.W_OK)
    code, out, err = check_config(path, capsys)
    assert (code, out) == (cli.EXIT_USAGE, "")
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(f"voipgw: configuration error: {path}: [trunks.a] media_policy:")
    assert lines[1].startswith(f"voipgw: warning: {path}: [gateway] state_dir: {state} cannot")


# -- item: a TLS key and a PostgreSQL password file this user may not read ------------------


def test_a_tls_key_only_the_service_may_read_is_check_configs_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mode 600, owned by the service's user: check-config as the operator said "cannot be
    read by this user", exit 2, of a file the service reads."""
    pki = TestPki(tmp_path)
    one = pki.ca("CA").issue("one")
    one.key.chmod(0o600)
    path = write_config(
        tmp_path,
        tmp_path / "state",
        f'[plugins.tls]\ncertificate = "{one.certificate}"\nprivate_key = "{one.key}"\n',
        enable='"udp", "tls"',
    )
    deny(monkeypatch, one.key, os.R_OK)
    code, out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err
    assert out.endswith("OK (2 plugins: udp, tls)\n")
    assert err == (
        f"voipgw: warning: {path}: [plugins.tls] private_key: {one.key} cannot be read by this "
        f"user ({user_name()}), who runs check-config, so it was not checked: {AS_ANOTHER_USER}\n"
    )
    # voipgw run, the service: still an error naming the key.
    opened = Path.open

    def open_as_another_user(p: Path, *args: Any, **kwargs: Any) -> Any:
        if p == one.key:
            raise PermissionError(13, "Permission denied", str(p))
        return opened(p, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_as_another_user)
    with pytest.raises(ConfigError) as caught:
        built(path)
    assert (caught.value.table, caught.value.key) == ("plugins.tls", "private_key")
    assert "cannot be read by this user" in caught.value.message


def test_a_tls_key_check_config_can_read_is_checked_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key of another certificate stays an error of check-config."""
    pki = TestPki(tmp_path)
    ca = pki.ca("CA")
    one, two = ca.issue("one"), ca.issue("two")
    path = write_config(
        tmp_path,
        tmp_path / "state",
        f'[plugins.tls]\ncertificate = "{one.certificate}"\nprivate_key = "{two.key}"\n',
        enable='"udp", "tls"',
    )
    code, out, err = check_config(path, capsys)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert err.startswith(
        f"voipgw: configuration error: {path}: [plugins.tls] private_key: {two.key}: not the "
        f"private key of {one.certificate}"
    )


def test_a_password_file_only_the_service_may_read_is_check_configs_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("psycopg")
    secret = tmp_path / "pgpass"
    secret.write_text("Sup3r-Secret\n")
    secret.chmod(0o600)
    path = write_config(
        tmp_path,
        tmp_path / "state",
        f'[store]\nbackend = "postgresql"\ndsn = "dbname=x"\npassword_file = "{secret}"\n',
    )
    deny(monkeypatch, secret, os.R_OK)
    code, out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [store] password_file: {secret} cannot be read by this user "
        f"({user_name()}), who runs check-config, so it was not checked: {AS_ANOTHER_USER}\n"
    )
    assert "Sup3r-Secret" not in out + err
    # The mode is checked still (stat needs no read permission).
    secret.chmod(0o640)
    code, out, err = check_config(path, capsys)
    assert code == cli.EXIT_USAGE
    assert "password_file: " in err and "chmod 600" in err
    # voipgw run, the service, reads it itself: an error (the file read fails as this user).
    secret.chmod(0o600)
    real_read = Path.read_text

    def read_as_another_user(p: Path, *args: Any, **kwargs: Any) -> str:
        if p == secret:
            raise PermissionError(13, "Permission denied", str(p))
        return real_read(p, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_as_another_user)
    config = from_mapping(
        {"store": {"backend": "postgresql", "dsn": "dbname=x", "password_file": str(secret)}},
        file="gw.toml",
    )
    with pytest.raises(ConfigError) as caught:
        backends.check_store(config)
    assert str(caught.value) == (
        f"gw.toml: [store] password_file: {secret}: cannot read: Permission denied"
    )


def test_a_file_owned_by_another_user_names_that_user_in_the_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its owner is most likely the service's user: the one to check as."""
    secret = tmp_path / "pgpass"
    secret.write_text("x\n")
    deny(monkeypatch, secret, os.R_OK)
    monkeypatch.setattr(config_mod, "owner_name", lambda p: "voipgw")
    with config_mod.reading_as_checker() as unread:
        assert config_mod.unreadable_here(secret, "password_file", file="f", table="store")
    (note,) = unread
    assert note.message.endswith(
        "the service's user (its owner, voipgw, most likely) may be allowed to; `voipgw run` "
        "as a user who may not refuses to start (check it as that user: sudo -u voipgw voipgw "
        "check-config FILE)"
    )
    # Outside check-config (voipgw run): nothing is noted, the caller reads it and refuses.
    assert not config_mod.unreadable_here(secret, "password_file", file="f", table="store")


@pytest.mark.parametrize(
    ("plugin", "keys", "extra"),
    [
        ("wss", ("certificate", "private_key"), ""),
        ("metrics", ("tls_certificate", "tls_private_key"), ""),
        (
            "stir_shaken",
            (None, "private_key"),
            'sign_trunks = ["carrier"]\ncertificate_url = "https://cr.example/signer.pem"\n',
        ),
    ],
)
def test_every_plugin_key_file_only_the_service_may_read_is_check_configs_warning(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    plugin: str,
    keys: tuple[str | None, str],
    extra: str,
) -> None:
    """The private keys other plugins load at check-config, as the tls plugin's."""
    one = TestPki(tmp_path).ca("CA").issue("one")
    certificate_key, key_key = keys
    table = f'[plugins.{plugin}]\n{key_key} = "{one.key}"\n{extra}'
    if certificate_key is not None:
        table += f'{certificate_key} = "{one.certificate}"\n'
    trunk = '[[trunks]]\nname = "carrier"\naddress = "udp:192.0.2.1:5060"\n'
    path = write_config(tmp_path, tmp_path / "state", table + trunk, f'"udp", "{plugin}"')
    code, out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err  # readable: loaded and checked
    deny(monkeypatch, one.key, os.R_OK)
    code, out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [plugins.{plugin}] {key_key}: {one.key} cannot be read by "
        f"this user ({user_name()}), who runs check-config, so it was not checked: "
        f"{AS_ANOTHER_USER}\n"
    ), out


def test_a_sqlite_store_whose_files_exist_and_are_writable_runs_in_a_state_dir_it_may_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite opens a store whose file, -wal and -shm exist and are writable without creating
    anything in the directory (and cannot remove its WAL there: it stays), so a state_dir owned
    by root with the store's files the service user's ran before config-35, and must still."""
    state = tmp_path / "state"
    state.mkdir()
    for name in ("voipgw.sqlite3", "voipgw.sqlite3-wal", "voipgw.sqlite3-shm"):
        (state / name).touch()
    path = write_config(tmp_path, state)
    deny(monkeypatch, state, os.W_OK)
    built(path).check()  # voipgw run
    code, out, err = check_config(path, capsys)
    assert (code, err) == (cli.EXIT_OK, ""), out
    # Without its WAL the store creates one in the directory: refused as before.
    (state / "voipgw.sqlite3-wal").unlink()
    monkeypatch.setattr(gateway_mod, "_creates_a_file_in", lambda p: False)
    with pytest.raises(ConfigError):
        built(path).check()


def test_run_tries_a_state_dir_os_access_says_it_may_not_write_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """access(2) may answer no where a write succeeds (NFS mapping users, a capability such as
    CAP_DAC_OVERRIDE, which it ignores for a user other than root): the service, which ran
    with such a state_dir before config-35, tries creating a file before refusing it."""
    state = tmp_path / "state"
    state.mkdir()
    path = write_config(tmp_path, state)
    deny(monkeypatch, state, os.W_OK)  # root may write in it: access(2) lies here
    built(path).check()
    assert sorted(state.iterdir()) == []  # the file tried is not left behind


def owned(monkeypatch: pytest.MonkeyPatch, owners: dict[Path, int]) -> None:
    """``os.stat`` says each path of ``owners`` is that uid's (the tests run as root)."""
    real_stat = config_mod.os.stat

    def stat(p: Any, *args: Any, **kwargs: Any) -> Any:
        result = real_stat(p, *args, **kwargs)
        if Path(p) in owners:
            return os.stat_result((*result[0:4], owners[Path(p)], *result[5:]))
        return result

    monkeypatch.setattr(config_mod.os, "stat", stat)


@pytest.mark.parametrize(("key_owner", "mode", "refused"), [(0, 0o600, True), (4321, 0o600, False)])
def test_a_key_the_state_dirs_owner_may_not_read_either_stays_check_configs_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    key_owner: int,
    mode: int,
    refused: bool,
) -> None:
    """The existing state_dir's owner is the user `voipgw run` created it as: a key of mode
    600 of another user's (root's, copied with sudo) is one the service may not read either.
    check-config as the operator said so (exit 2) before config-35; the warning (exit 0) let
    `check-config && systemctl reload` go on to a gateway that refuses to start. A key of that
    owner's stays the warning."""
    pki = TestPki(tmp_path)
    one = pki.ca("CA").issue("one")
    one.key.chmod(mode)
    state = tmp_path / "state"
    state.mkdir()
    path = write_config(
        tmp_path,
        state,
        f'[plugins.tls]\ncertificate = "{one.certificate}"\nprivate_key = "{one.key}"\n',
        enable='"udp", "tls"',
    )
    deny(monkeypatch, one.key, os.R_OK)
    owned(monkeypatch, {state: 4321, one.key: key_owner})
    monkeypatch.setattr(gateway_mod, "_store_files_writable", lambda p: True)
    code, out, err = check_config(path, capsys)
    if not refused:
        assert code == cli.EXIT_OK, err
        assert err.startswith(f"voipgw: warning: {path}: [plugins.tls] private_key: "), err
        return
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert err == (
        f"voipgw: configuration error: {path}: [plugins.tls] private_key: {one.key} cannot be "
        f"read by this user ({user_name()}), who runs check-config, nor by uid 4321, the owner "
        f"of the state_dir {state} (the user `voipgw run` created it as, most likely): its "
        f"mode is 0600, its owner root; `voipgw run` as uid 4321 refuses to start\n"
    )


@pytest.mark.parametrize("key_owner", [0, 4321])
def test_root_warns_of_a_key_the_state_dirs_owner_may_not_read(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    key_owner: int,
) -> None:
    """Root reads any file: check-config in a deploy script (as root) passed a key of mode 600
    of root's that `voipgw run` as the state_dir's owner refuses. A warning (exit 0): such a
    configuration passed before, and the service may run as root."""
    pki = TestPki(tmp_path)
    one = pki.ca("CA").issue("one")
    one.key.chmod(0o600)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    path = write_config(
        tmp_path,
        state,
        f'[plugins.tls]\ncertificate = "{one.certificate}"\nprivate_key = "{one.key}"\n',
        enable='"udp", "tls"',
    )
    monkeypatch.setattr(config_mod.os, "geteuid", lambda: 0)
    owned(monkeypatch, {state: 4321, one.key: key_owner})
    code, out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err
    assert out.endswith("OK (2 plugins: udp, tls)\n")
    if key_owner == 4321:
        assert err == ""
        return
    assert err == (
        f"voipgw: warning: {path}: [plugins.tls] private_key: {one.key} can be read by root, "
        f"who runs check-config, but not by uid 4321, the owner of the state_dir {state} (the "
        f"user `voipgw run` created it as, most likely): its mode is 0600, its owner root; "
        f"`voipgw run` as uid 4321 refuses to start\n"
    )


def unreadable(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """``denied`` as another user sees a key of mode 600: ``os.access`` says no and reading it
    fails (``Path.open``, ``Path.read_bytes``: the tls and stir_shaken plugins' reads), not
    only the question (root reads it whatever ``os.access`` says)."""
    deny(monkeypatch, denied, os.R_OK)
    opened, read_bytes = Path.open, Path.read_bytes

    def open_as_another_user(p: Path, *args: Any, **kwargs: Any) -> Any:
        if p == denied:
            raise PermissionError(13, "Permission denied", str(p))
        return opened(p, *args, **kwargs)

    def read_bytes_as_another_user(p: Path) -> bytes:
        if p == denied:
            raise PermissionError(13, "Permission denied", str(p))
        return read_bytes(p)

    monkeypatch.setattr(Path, "open", open_as_another_user)
    monkeypatch.setattr(Path, "read_bytes", read_bytes_as_another_user)


@pytest.mark.parametrize(
    ("plugin", "table"),
    [
        ("tls", "certificate = '{certificate}'\nprivate_key = '{key}'\n"),
        ("wss", "certificate = '{certificate}'\nprivate_key = '{key}'\n"),
        (
            "stir_shaken",
            "private_key = '{key}'\nsign_trunks = ['carrier']\n"
            "certificate_url = 'https://cr.example/signer.pem'\n",
        ),
    ],
    ids=["tls", "wss", "stir_shaken"],
)
def test_a_key_the_plugin_reads_at_registration_is_the_warning_too(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    plugin: str,
    table: str,
) -> None:
    """The tls and wss transports load their pair, and stir_shaken its signing key, when
    registered too: check-config as another user than the service's stopped there with a
    plugin error (`plugin 'tls' failed in gateway_register_transports: CertificateFileError at
    tls.py:LINE`, stir_shaken's text withheld) where the warning was meant, and where before
    config-35 a configuration error named the key (a test as root, reading any file whatever
    os.access said, did not see it)."""
    one = TestPki(tmp_path).ca("CA").issue("one")
    text = table.format(certificate=one.certificate, key=one.key)
    trunk = '[[trunks]]\nname = "carrier"\naddress = "udp:192.0.2.1:5060"\n'
    path = write_config(
        tmp_path, tmp_path / "state", f"[plugins.{plugin}]\n{text}{trunk}", f'"udp", "{plugin}"'
    )
    unreadable(monkeypatch, one.key)
    code, out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [plugins.{plugin}] private_key: {one.key} cannot be read by "
        f"this user ({user_name()}), who runs check-config, so it was not checked: "
        f"{AS_ANOTHER_USER}\n"
    ), out
    assert out.endswith(f"OK (2 plugins: udp, {plugin})\n")
    # voipgw run, the service: an error.
    with pytest.raises((ConfigError, PluginError)):
        built(path)


# -- session 37: a file this process holds open is not opened again -----------------------


def test_the_files_checked_keep_the_locks_this_process_holds(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops every POSIX lock the process holds on it
    (https://www.sqlite.org/howtocorrupt.html §2.2). check-config's read try and run's
    write try opened and closed the file: a lock a plugin's SQLite connection held on it
    (check-config reads files as root too) was gone, another process could take it. Now the
    descriptor held answers, and the file is not opened again."""
    held = tmp_path / "database"
    held.write_bytes(b"")
    with open(held, "r+b") as file:
        fcntl.lockf(file, fcntl.LOCK_EX)
        assert locked_for_others(held)
        with config_mod.reading_as_checker() as notes:
            assert not config_mod.unreadable_here(held, "key", file="voipgw.toml", table="t")
        assert notes == []
        assert locked_for_others(held)
        assert config_mod.may_open(held, os.O_WRONLY)
        assert config_mod.may_open(held, os.O_RDONLY)
        assert locked_for_others(held)
    assert not locked_for_others(held)
    # Not held: tried, as before.
    assert config_mod.may_open(held, os.O_WRONLY)
    assert not config_mod.may_open(tmp_path / "missing", os.O_RDONLY)


def test_where_the_descriptors_cannot_be_listed_nothing_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No /proc/self/fd (a chroot without /proc): whether the file is held cannot be told, so
    it is not opened (that could drop a lock); access(2) for the effective user answers."""
    held = tmp_path / "database"
    held.write_bytes(b"")
    real_listdir = os.listdir

    def listdir(path: Any = ".") -> list[str]:
        if str(path) == "/proc/self/fd":
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_listdir(path)

    def no_open(*args: Any, **kwargs: Any) -> int:
        raise AssertionError("opened")

    monkeypatch.setattr(config_mod.os, "listdir", listdir)
    monkeypatch.setattr(config_mod.os, "open", no_open)
    assert config_mod.may_open(held, os.O_WRONLY)
    deny(monkeypatch, held, os.W_OK)
    assert not config_mod.may_open(held, os.O_WRONLY)


def test_a_descriptor_held_for_reading_only_does_not_answer_for_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The descriptor held answers only for what it was opened for: one held for reading
    says nothing of writing, which access(2) answers (the file is still not opened)."""
    held = tmp_path / "database"
    held.write_bytes(b"")
    with open(held, "rb"):
        deny(monkeypatch, held, os.R_OK | os.W_OK)

        def no_open(*args: Any, **kwargs: Any) -> int:
            raise AssertionError("opened")

        monkeypatch.setattr(config_mod.os, "open", no_open)
        assert config_mod.may_open(held, os.O_RDONLY)  # held for reading: it may
        assert not config_mod.may_open(held, os.O_WRONLY)  # access(2) says no
    with open(held, "wb"):
        assert config_mod.may_open(held, os.O_WRONLY)
        assert not config_mod.may_open(held, os.O_RDONLY)


@pytest.mark.skipif(not hasattr(os, "O_PATH"), reason="O_PATH is Linux's")
def test_a_descriptor_held_with_o_path_does_not_answer_for_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An O_PATH descriptor (F_GETFL's access mode 0, O_RDONLY's value) may neither read nor
    write: it does not answer, the file is tried as one not held."""
    held = tmp_path / "key.pem"
    held.write_bytes(b"")
    descriptor = os.open(held, os.O_PATH)
    try:
        deny(monkeypatch, held, os.R_OK)
        assert not config_mod.may_open(held, os.O_RDONLY)
    finally:
        os.close(descriptor)


def test_a_plugin_naming_no_key_of_its_table_in_written_directories_is_the_plugins_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A third-party plugin's ``written_directories()`` naming a KEY its config class has not
    (a typo, a renamed field) was an AttributeError's traceback out of check-config and run;
    it is the plugin's error, naming it and the key."""
    from gateway.plugins.keyexchange import dtls_srtp

    def misnamed(self: Any) -> list[tuple[str, Path, str, tuple[str, ...]]]:
        return [("state_directory", Path(self.state_dir) / "dtls", "certificates", ())]

    monkeypatch.setattr(dtls_srtp.DtlsConfig, "written_directories", misnamed)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    path = write_config(tmp_path, state, enable='"udp", "dtls"')
    with pytest.raises(PluginError) as caught:
        built(path).check()
    assert str(caught.value) == (
        "plugin 'dtls': written_directories() names 'state_directory', which is not a "
        "directory key of its [plugins.dtls] table"
    )
    code, _out, err = check_config(path, capsys)
    assert code != cli.EXIT_OK and "Traceback" not in err, err
    assert "written_directories() names 'state_directory'" in err, err


# -- session 38 --------------------------------------------------------------------------------


def read_only_files(monkeypatch: pytest.MonkeyPatch, *read_only: Path) -> None:
    """``read_only`` are on a file system mounted read-only (statvfs ST_RDONLY, open(2) for
    writing EROFS, for root too): files bind-mounted read-only on their own, in a directory
    that is not."""
    real_statvfs, real_open, real_access = os.statvfs, os.open, os.access

    class ReadOnly:
        f_flag = os.ST_RDONLY

    def statvfs(path: Any) -> Any:
        return ReadOnly() if Path(path) in read_only else real_statvfs(path)

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(path) in read_only and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(30, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if Path(path) in read_only and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(config_mod.os, "statvfs", statvfs)
    monkeypatch.setattr(config_mod.os, "open", open_)
    monkeypatch.setattr(config_mod.os, "access", access)


def test_a_store_file_on_a_read_only_file_system_says_so_and_the_mount_remedy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQLite store bind-mounted read-only on its own (a container's volume with :ro) in a
    writable state_dir: root ran with it (and failed at the first write: "attempt to write a
    readonly database"), another user was told to chown or chmod it, which changes nothing.
    No user may write it: an error of run and check-config, naming the mount to change."""
    state = tmp_path / "state"
    state.mkdir()
    database = state / "voipgw.sqlite3"
    database.touch()
    path = write_config(tmp_path, state)
    read_only_files(monkeypatch, database)
    monkeypatch.setattr(
        config_mod, "mount_point", lambda p: Path("/srv/voipgw.sqlite3"), raising=False
    )
    message = (
        f"{database} is on a read-only file system: the SQLite store cannot be written "
        "(mount /srv/voipgw.sqlite3 read-write)"
    )
    for uid in (0, 4321):  # root (CI), and the service's user
        monkeypatch.setattr(config_mod.os, "geteuid", lambda uid=uid: uid)
        with pytest.raises(ConfigError) as caught:
            built(path).check()  # voipgw run
        assert (caught.value.table, caught.value.key) == ("gateway", "state_dir")
        assert caught.value.message == message
        code, out, err = check_config(path, capsys)
        assert (code, out) == (cli.EXIT_USAGE, "")
        assert err == f"voipgw: configuration error: {path}: [gateway] state_dir: {message}\n"


def test_the_mount_point_is_the_longest_one_a_path_lies_under() -> None:
    assert config_mod.mount_point(Path("/proc/self/status")) == Path("/proc")
    assert config_mod.mount_point(Path("/")) == Path("/")
    assert config_mod._unescape_mount("/srv/voipgw\\040state") == Path("/srv/voipgw state")


def said_by_run(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> list[tuple[int, str]]:
    """What ``Gateway.serve`` (``voipgw run``) logs at WARNING before it opens its store."""

    class Opened(Exception):
        pass

    def open_store(*args: object, **kwargs: object) -> None:
        raise Opened

    monkeypatch.setattr(gateway_mod, "open_store", open_store)
    caplog.set_level(logging.WARNING)
    caplog.clear()
    with pytest.raises(Opened):
        trio.run(gateway.serve)
    return [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.levelno >= logging.WARNING
    ]


def test_a_plugin_directory_that_is_a_link_to_nothing_is_a_warning_of_both(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """<state_dir>/recordings a symbolic link to a file system not mounted yet: judged by its
    name, it was a directory still to be made in a writable state_dir (nothing said), and the
    first recording failed, since mkdir does not make a directory through a link (EEXIST),
    whatever the permissions where it points. Warned of by check-config and run (which starts:
    the first write may never come, and such a gateway ran before)."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    unmounted = tmp_path / "mnt" / "recordings"
    (state / "recordings").symlink_to(unmounted)
    path = write_config(
        tmp_path, state, "[plugins.recorder]\nall_calls = true\n", '"udp", "recorder"'
    )
    message = (
        f"{state / 'recordings'} is a symbolic link to {unmounted}, which does not exist: the "
        "recordings (recorder plugin) cannot be made there; `voipgw run` starts, and what "
        "needs it fails until it exists (a file system not mounted yet?)"
    )
    gateway = built(path)
    gateway.check()  # voipgw run
    assert [str(warning) for warning in gateway.access_warnings] == [
        f"{path}: [plugins.recorder] state_dir: {message}"
    ]
    # voipgw run logs it and goes on to open its store (where this stops it).
    assert said_by_run(built(path), monkeypatch, caplog) == [
        (logging.WARNING, f"configuration: {path}: [plugins.recorder] state_dir: {message}")
    ]
    code, _out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err
    assert err == f"voipgw: warning: {path}: [plugins.recorder] state_dir: {message}\n"
    # Mounted: nothing to say.
    unmounted.mkdir(parents=True)
    code, _out, err = check_config(path, capsys)
    assert (code, err) == (cli.EXIT_OK, "")


def test_a_path_reached_through_a_symbolic_link_is_shown_with_where_it_leads(
    tmp_path: Path,
) -> None:
    target = tmp_path / "srv"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    assert config_mod.shown_path(target) == str(target)
    assert (
        config_mod.shown_path(tmp_path / "link")
        == f"{tmp_path / 'link'} (a symbolic link to {target})"
    )
    assert config_mod.shown_path(tmp_path / "link" / "dtls") == (
        f"{tmp_path / 'link' / 'dtls'} ({target / 'dtls'}, through a symbolic link)"
    )


def test_a_crl_directory_on_a_read_only_file_system_is_a_warning_not_a_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """<state_dir>/tls on a read-only file system (its own mount): the gateway serves with the
    CRLs it fetches and cannot save them, so run warns and starts; check-config warns (exit
    0), naming the mount to make read-write."""
    state = tmp_path / "state"
    (state / "tls").mkdir(parents=True)
    ca = TestPki(tmp_path).ca("CA")
    pair = ca.issue("gateway")
    table = (
        f'[plugins.tls]\ncertificate = "{pair.certificate}"\nprivate_key = "{pair.key}"\n'
        f'ca_bundles = ["{ca.certificate}"]\ncrl_urls = ["http://127.0.0.1:1/ca.crl"]\n'
    )
    path = write_config(tmp_path, state, table, '"udp", "tls"')
    read_only_files(monkeypatch, state / "tls")
    monkeypatch.setattr(config_mod, "mount_point", lambda p: Path("/srv/tls"), raising=False)
    message = (
        f"{path}: [gateway] state_dir: {state / 'tls'} is on a read-only file system (mount "
        "/srv/tls read-write): the fetched CRLs (tls plugin), kept for a start without network, "
        "cannot be written there; `voipgw run` starts, and runs without it"
    )
    gateway = built(path)
    gateway.check()  # voipgw run
    assert [str(warning) for warning in gateway.access_warnings] == [message]
    code, _out, err = check_config(path, capsys)
    assert (code, err) == (cli.EXIT_OK, f"voipgw: warning: {message}\n")


@pytest.mark.parametrize(
    "entry",
    [
        ("state_dir", "dtls", "certificates", (), "maybe"),
        ("state_dir", "dtls"),
        ["state_dir"],
        (1, "dtls", "certificates", ()),  # was a traceback: getattr(config, 1)
        ("state_dir", None, "certificates", ()),  # was a traceback: Path(None)
    ],
)
def test_a_written_directories_entry_of_another_shape_is_the_plugins_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: Any
) -> None:
    from gateway.plugins.keyexchange import dtls_srtp

    monkeypatch.setattr(dtls_srtp.DtlsConfig, "written_directories", lambda self: [entry])
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    path = write_config(tmp_path, state, enable='"udp", "dtls"')
    with pytest.raises(PluginError) as caught:
        built(path).check()
    assert str(caught.value) == (
        f"plugin 'dtls': written_directories() gives {entry!r}: expected (KEY, DIRECTORY, "
        "WHAT, FILES), or with 'warn' as a fifth element"
    )


def test_a_written_directories_entry_given_as_a_list_is_taken_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries were unpacked, so a third-party plugin's lists worked: they still do."""
    from gateway.plugins.keyexchange import dtls_srtp

    def as_lists(self: Any) -> list[list[Any]]:
        return [["state_dir", Path(self.state_dir) / "dtls", "certificates", []]]

    monkeypatch.setattr(dtls_srtp.DtlsConfig, "written_directories", as_lists)
    state = tmp_path / "state"
    (state / "dtls").mkdir(parents=True, mode=0o700)
    path = write_config(tmp_path, state, enable='"udp", "dtls"')
    built(path).check()
    deny(monkeypatch, state / "dtls", os.W_OK)
    monkeypatch.setattr(gateway_mod, "_creates_a_file_in", lambda p: False)
    with pytest.raises(ConfigError, match="certificates cannot be written there"):
        built(path).check()


# -- review of session 38 (review-c2) ---------------------------------------------------------


def crl_fetching_config(tmp_path: Path, state: Path) -> Path:
    """A tls listener with its own certificate whose CA's CRL is fetched over HTTP: each CRL
    fetched is saved under <state_dir>/tls/crls, for a start without network."""
    ca = TestPki(tmp_path).ca("CA")
    pair = ca.issue("gateway")
    table = (
        f'[plugins.tls]\ncertificate = "{pair.certificate}"\nprivate_key = "{pair.key}"\n'
        f'ca_bundles = ["{ca.certificate}"]\ncrl_urls = ["http://127.0.0.1:1/ca.crl"]\n'
    )
    return write_config(tmp_path, state, table, '"udp", "tls"')


def test_a_crl_directory_that_is_a_link_to_nothing_is_a_warning_of_run_and_check_config(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """<state_dir>/tls a symbolic link to a file system not mounted yet: the CRL fetcher's
    mkdir fails there (EEXIST) at each fetch, whoever runs it. A warning of run (logged, it
    starts) and check-config (exit 0), ending as the entry's other warnings do: the gateway
    runs without the saved copies, nothing "fails until it exists" (the fetched CRL is used)."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    unmounted = tmp_path / "mnt" / "tls"
    (state / "tls").symlink_to(unmounted)
    path = crl_fetching_config(tmp_path, state)
    message = (
        f"{path}: [gateway] state_dir: {state / 'tls'} is a symbolic link to {unmounted}, "
        "which does not exist: the fetched CRLs (tls plugin), kept for a start without "
        "network, cannot be written there; `voipgw run` starts, and runs without it (a file "
        "system not mounted yet?)"
    )
    gateway = built(path)
    gateway.check()  # voipgw run
    assert [str(warning) for warning in gateway.access_warnings] == [message]
    assert said_by_run(built(path), monkeypatch, caplog) == [
        (logging.WARNING, f"configuration: {message}")
    ]
    code, _out, err = check_config(path, capsys)
    assert (code, err) == (cli.EXIT_OK, f"voipgw: warning: {message}\n")
    unmounted.mkdir(parents=True)
    assert check_config(path, capsys)[::2] == (cli.EXIT_OK, "")


def test_run_as_root_says_nothing_of_a_crl_directory_of_roots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """<state_dir>/tls of root's in a state_dir of the service's user: `voipgw run` as root
    writes there (nothing to log at each start); check-config as root warns, naming the
    state_dir's owner, who may not."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a directory of another user's")
    state = tmp_path / "state"
    (state / "tls").mkdir(parents=True, mode=0o755)
    os.chown(state, 4321, 4321)
    path = crl_fetching_config(tmp_path, state)
    gateway = built(path)
    gateway.check()  # voipgw run, as root
    assert gateway.access_warnings == []
    code, _out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err
    assert f"{state / 'tls'} can be written by root, who runs check-config, but not by " in err


def test_a_warn_only_entry_checks_its_files_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A third-party plugin's WARN_ONLY entry naming a file it writes in place (a cache): one
    on a read-only file system of its own is a warning of run and check-config, naming the
    mount, never a refusal."""
    from gateway.plugins.keyexchange import dtls_srtp

    def cache(self: Any) -> list[tuple[str, Path, str, tuple[str, ...], str]]:
        entry = (Path(self.state_dir) / "dtls", "the cache (dtls plugin)", ("cache.db",))
        return [("state_dir", *entry, config_mod.WARN_ONLY)]

    monkeypatch.setattr(dtls_srtp.DtlsConfig, "written_directories", cache)
    state = tmp_path / "state"
    (state / "dtls").mkdir(parents=True, mode=0o700)
    (state / "dtls" / "cache.db").touch()
    path = write_config(tmp_path, state, enable='"udp", "dtls"')
    built(path).check()
    read_only_files(monkeypatch, state / "dtls" / "cache.db")
    monkeypatch.setattr(config_mod, "mount_point", lambda p: Path("/srv/cache.db"))
    message = (
        f"{path}: [plugins.dtls] state_dir: {state / 'dtls' / 'cache.db'} is on a read-only "
        "file system (mount /srv/cache.db read-write): the cache (dtls plugin) cannot be "
        "written there; `voipgw run` starts, and runs without it"
    )
    gateway = built(path)
    gateway.check()  # voipgw run
    assert [str(warning) for warning in gateway.access_warnings] == [message]
    assert check_config(path, capsys)[::2] == (cli.EXIT_OK, f"voipgw: warning: {message}\n")


# -- session 39 (config-39) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "files", ["cache.db", ("cache.db", 1), None], ids=["a text", "not a name", "none"]
)
def test_files_not_given_as_names_are_the_plugins_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: Any
) -> None:
    """FILES written as "cache.db" (one name, not ("cache.db",)) was taken letter by letter:
    the files c, a, h ... were looked for in the directory, and the one meant never checked."""
    from gateway.plugins.keyexchange import dtls_srtp

    def entry(self: Any) -> list[tuple[Any, ...]]:
        return [("state_dir", Path(self.state_dir) / "dtls", "the cache (dtls plugin)", files)]

    monkeypatch.setattr(dtls_srtp.DtlsConfig, "written_directories", entry)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    path = write_config(tmp_path, state, enable='"udp", "dtls"')
    given = ("state_dir", state / "dtls", "the cache (dtls plugin)", files)
    with pytest.raises(PluginError) as caught:
        built(path).check()
    hint = " (one name is written ('cache.db',))" if isinstance(files, str) else ""
    assert str(caught.value) == (
        f"plugin 'dtls': written_directories() gives {given!r}: FILES must be a tuple of file "
        f"names, got {files!r}{hint}"
    )


def served_certificate_config(tmp_path: Path, days: int, *, not_before: Any = None) -> Path:
    """A tls listener serving a certificate valid ``days`` from an hour ago (or from
    ``not_before``)."""
    pki = TestPki(tmp_path / "pki")
    pair = pki.ca("CA").issue("gateway", days=days, not_before=not_before)
    table = f'[plugins.tls]\ncertificate = "{pair.certificate}"\nprivate_key = "{pair.key}"\n'
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{state}"\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0", "tls:127.0.0.1:0"]\n'
        f'[plugins]\nenable = ["udp", "tls"]\n{table}'
    )
    return path


def test_check_config_warns_of_a_served_certificate_expiring_within_14_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing warned before the gateway's own certificate expired: check-config passed it in
    silence the day before every peer refused the gateway."""
    path = served_certificate_config(tmp_path, days=10)
    code, out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err
    certificate = tmp_path / "pki" / "gateway.crt"
    assert certificate.is_file()
    assert re.fullmatch(
        rf"voipgw: warning: {re.escape(str(path))}: \[plugins\.tls\] certificate: the "
        rf"certificate in {re.escape(str(certificate))} expires on \d{{4}}-\d\d-\d\d "
        r"\d\d:\d\d:\d\d UTC \(in 9 days\): renew it\n",
        err,
    ), err
    assert out.endswith("OK (2 plugins: udp, tls)\n")
    assert check_config(served_certificate_config(tmp_path / "later", days=30), capsys)[::2] == (
        cli.EXIT_OK,
        "",
    )


def test_check_config_refuses_a_served_certificate_out_of_its_validity_period(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Expired: every peer that verifies refuses it; check-config passed it (`run` starts
    with it, warning, as before)."""
    month_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=40)
    path = served_certificate_config(tmp_path, days=30, not_before=month_ago)
    code, out, err = check_config(path, capsys)
    assert (code, out) == (cli.EXIT_USAGE, ""), err
    certificate = tmp_path / "pki" / "gateway.crt"
    assert err.startswith(
        f"voipgw: configuration error: {path}: [plugins.tls] certificate: {certificate}: the "
        "certificate expired on "
    ), err
    assert err.endswith("(subject CN=gateway): peers will refuse it\n"), err
    built(path).check()  # voipgw run: starts (its transport logs the problem)


def test_a_warn_only_directory_declared_twice_is_one_line_naming_every_plugin(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One directory in the WARN_ONLY entries of two plugins (and twice in one's): a line
    each time it was listed, the same problem said three times at every start."""
    from gateway.plugins.keyexchange import dtls_srtp, zrtp

    def cache(what: str, times: int) -> Any:
        def entries(self: Any) -> list[tuple[str, Path, str, tuple[str, ...], str]]:
            entry = ("state_dir", Path(self.state_dir) / "cache", what, (), config_mod.WARN_ONLY)
            return [entry] * times

        return entries

    monkeypatch.setattr(
        dtls_srtp.DtlsConfig, "written_directories", cache("the cache (dtls plugin)", 2)
    )
    monkeypatch.setattr(zrtp.ZrtpConfig, "written_directories", cache("the cache (zrtp plugin)", 1))
    state = tmp_path / "state"
    (state / "cache").mkdir(parents=True, mode=0o700)
    path = write_config(tmp_path, state, enable='"udp", "dtls", "zrtp"')
    read_only_files(monkeypatch, state / "cache")
    monkeypatch.setattr(config_mod, "mount_point", lambda p: Path("/srv/cache"))
    message = (
        f"{path}: [plugins.dtls] state_dir: {state / 'cache'} is on a read-only file system "
        "(mount /srv/cache read-write): the cache (dtls plugin) and the cache (zrtp plugin) "
        "(written_directories() of the dtls and zrtp plugins) cannot be written there; "
        "`voipgw run` starts, and runs without it"
    )
    gateway = built(path)
    gateway.check()  # voipgw run
    assert [str(warning) for warning in gateway.access_warnings] == [message]
    assert said_by_run(built(path), monkeypatch, caplog) == [
        (logging.WARNING, f"configuration: {message}")
    ]
    assert check_config(path, capsys)[::2] == (cli.EXIT_OK, f"voipgw: warning: {message}\n")


def test_a_read_only_generated_certificate_directory_of_tls_and_wss_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """<state_dir>/tls on a read-only file system of its own, empty, with a tls and a wss
    listener taking the generated certificate: `voipgw run` (as root too) stopped at the
    first listener's start, after the store had opened; check-config passed. One error of
    both, naming both transports and the mount; with the pair there, nothing is written, so
    nothing is said."""
    state = tmp_path / "state"
    (state / "tls").mkdir(parents=True)
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{state}"\n'
        '[sip]\nlisten = ["tls:127.0.0.1:0", "wss:127.0.0.1:0"]\n'
        '[plugins]\nenable = ["tls", "wss"]\n'
    )
    read_only_files(monkeypatch, state / "tls")
    monkeypatch.setattr(gateway_mod, "_creates_a_file_in", lambda p: False)  # EROFS
    monkeypatch.setattr(config_mod, "mount_point", lambda p: Path("/srv/tls"))
    message = (
        f"{state / 'tls'} is on a read-only file system (mount /srv/tls read-write): the "
        "generated certificate of the tls and wss listeners cannot be written there"
    )
    with pytest.raises(ConfigError) as caught:
        built(path).check()  # voipgw run
    assert (caught.value.table, caught.value.key, caught.value.message) == (
        "gateway",
        "state_dir",
        message,
    )
    code, _out, err = check_config(path, capsys)
    assert (code, err) == (
        cli.EXIT_USAGE,
        f"voipgw: configuration error: {path}: [gateway] state_dir: {message}\n",
    )
    (state / "tls" / "gateway.crt").touch()
    (state / "tls" / "gateway.key").touch()
    built(path).check()
