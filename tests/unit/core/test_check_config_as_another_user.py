"""``voipgw check-config`` and ``voipgw run`` as a user other than root, with real files and
permissions: the checking user is ``nobody`` (a forked child of the test that dropped root's
ids, so that the kernel answers, not a patched ``os.access``), the service's user ``daemon``
(it owns the state_dir, as the user ``voipgw run`` created it as; it is in group ``daemon``).

What no user but root could use is an error of both; what only the checking user's
permissions forbid is check-config's warning (naming the user, the file, the table and the
key) and run's error. The tests need root (CI runs them as root) and skip otherwise."""

from __future__ import annotations

import contextlib
import datetime
import grp  # imported before the child drops root: /root holds the stdlib
import io
import json
import os
import pwd
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from gateway.core import cli
from gateway.core import config as config_mod
from gateway.core.config import ConfigError
from gateway.core.gateway import Gateway
from gateway.core.plugins import load_plugins
from gateway.plugins.transports.certificates import ensure_self_signed
from tests.interop.harness.pki import Issued, TestPki


def _user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


NOBODY, DAEMON = _user("nobody"), _user("daemon")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or NOBODY is None or DAEMON is None,
    reason="acting as another user (nobody, daemon) needs root",
)

AS_ANOTHER_USER = (
    "the service's user may be allowed to; `voipgw run` as a user who may not refuses to "
    "start (check it as that user: sudo -u USER voipgw check-config FILE)"
)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is under root's 0700 one)."""
    base = Path(tempfile.mkdtemp(prefix="voipgw-config-36-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_nobody(work: Callable[[], object], *, real_uid_root: bool = False) -> object:
    """What ``work`` returns (JSON), run in a child process as ``nobody``, its groups none.
    ``real_uid_root``: only the effective ids are nobody's (a setuid wrapper's case), so
    access(2), which answers for the real user, answers as for root."""
    assert NOBODY is not None
    uid, gid = NOBODY.pw_uid, NOBODY.pw_gid
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            if real_uid_root:
                os.setresgid(0, gid, 0)
                os.setresuid(0, uid, 0)
            else:
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
            result: object = ["returned", work()]
        except BaseException as exc:  # reported to the parent, which fails the test
            result = ["raised", f"{type(exc).__name__}: {exc}"]
        with os.fdopen(write_end, "w") as pipe:
            pipe.write(json.dumps(result))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        outcome, value = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert outcome == "returned", value
    return value


def check_config(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["check-config", str(path)])
    return code, out.getvalue(), err.getvalue()


def check_config_as_nobody(path: Path, *, real_uid_root: bool = False) -> tuple[int, str, str]:
    # Once as root first: every module the check imports is imported before the child drops
    # root (the interpreter's own files are under /root, which nobody may not enter).
    check_config(path)
    code, out, err = as_nobody(lambda: check_config(path), real_uid_root=real_uid_root)  # type: ignore[misc]
    return code, out, err


def run_check(path: Path) -> str:
    """What ``voipgw run`` says before it starts anything (as the service: Gateway.check)."""
    try:
        config = config_mod.from_toml(path)
        Gateway(config, load_plugins(config)).check()
    except ConfigError as exc:
        return str(exc)
    return "started"


def run_as_nobody(path: Path) -> str:
    check_config(path)
    result = as_nobody(lambda: run_check(path))
    assert isinstance(result, str)
    return result


def service_state(shared: Path) -> Path:
    """The state_dir ``voipgw run`` made as the service's user (daemon), which the checking
    user may write in too (no warning of its own)."""
    assert DAEMON is not None
    state = shared / "state"
    state.mkdir()
    os.chown(state, DAEMON.pw_uid, DAEMON.pw_gid)
    state.chmod(0o777)
    return state


def write_config(shared: Path, state: Path, extra: str, enable: str) -> Path:
    path = shared / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{state}"\n[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        f"[plugins]\nenable = [{enable}]\n{extra}"
    )
    path.chmod(0o644)
    return path


def tls_config(shared: Path, pair: Issued, state: Path, extra: str = "") -> Path:
    table = (
        f'[plugins.tls]\ncertificate = "{pair.certificate}"\nprivate_key = "{pair.key}"\n{extra}'
    )
    return write_config(shared, state, table, '"udp", "tls"')


def owned_by_service(*paths: Path, mode: int = 0o600) -> None:
    assert DAEMON is not None
    for path in paths:
        os.chown(path, DAEMON.pw_uid, DAEMON.pw_gid)
        path.chmod(mode)


# -- item 1: a file in a directory the checking user may not enter ---------------------------


def closed_directory(shared: Path, mode: int, group: str) -> tuple[Path, Issued]:
    """/etc/voipgw's shape: the pair in a directory of ``mode``, owner root."""
    etc = shared / "etc"
    etc.mkdir()
    pair = TestPki(etc).ca("CA").issue("gateway")
    for path in etc.iterdir():
        path.chmod(0o644)
    os.chown(etc, 0, grp.getgrnam(group).gr_gid)
    etc.chmod(mode)
    return etc, pair


def test_a_key_in_a_directory_the_service_may_enter_is_a_warning_naming_the_directory(
    shared: Path,
) -> None:
    """/etc/voipgw 0750 root:daemon, checked by a user in neither: check-config said "does
    not exist or is not a file" (exit 2) of files that are there and the service reads."""
    etc, pair = closed_directory(shared, 0o750, "daemon")
    path = tls_config(shared, pair, service_state(shared))
    code, out, err = check_config_as_nobody(path)
    assert code == cli.EXIT_OK, err
    assert out.endswith("OK (2 plugins: udp, tls)\n")
    assert err == "".join(
        f"voipgw: warning: {path}: [plugins.tls] {key}: {file} cannot be reached by this user "
        f"(nobody), who runs check-config: it may not enter {etc} (mode 0750, owner root, "
        f"group daemon), so {file} was not checked: {AS_ANOTHER_USER}\n"
        for key, file in (("certificate", pair.certificate), ("private_key", pair.key))
    )
    # voipgw run as that user: the error says which directory, not "does not exist".
    assert run_as_nobody(path) == (
        f"{path}: [plugins.tls] certificate: {pair.certificate} cannot be reached by this "
        f"user (nobody): it may not enter {etc} (mode 0750, owner root, group daemon)"
    )


def test_a_key_in_a_directory_only_root_may_enter_is_an_error(shared: Path) -> None:
    """0700 root:root: the service's user may not enter it either (unless it is root)."""
    etc, pair = closed_directory(shared, 0o700, "root")
    path = tls_config(shared, pair, service_state(shared))
    code, out, err = check_config_as_nobody(path)
    assert (code, out) == (cli.EXIT_USAGE, ""), err
    assert err == "".join(
        f"voipgw: configuration error: {path}: [plugins.tls] {key}: {file} cannot be reached "
        f"by this user (nobody), who runs check-config, nor by any user but root: {etc} (mode "
        f"0700, owner root, group root) lets no other user enter it; `voipgw run` as any user "
        f"but root refuses to start (let the service's user enter it: chgrp SERVICE-GROUP "
        f"{etc} && chmod g+x {etc})\n"
        for key, file in (("certificate", pair.certificate), ("private_key", pair.key))
    )


def test_a_key_only_root_may_reach_is_a_warning_when_the_state_dir_is_roots(
    shared: Path,
) -> None:
    """A state_dir of root's: the service runs as root, most likely, and reaches the key, as
    for a file the state_dir's owner may read (session 35): check-config warns, exit 0."""
    etc, pair = closed_directory(shared, 0o700, "root")
    state = shared / "state"
    state.mkdir()
    state.chmod(0o777)  # root's, writable by the checking user (no warning of its own)
    path = tls_config(shared, pair, state)
    code, out, err = check_config_as_nobody(path)
    assert code == cli.EXIT_OK, err
    assert out.endswith("OK (2 plugins: udp, tls)\n")
    assert err == "".join(
        f"voipgw: warning: {path}: [plugins.tls] {key}: {file} cannot be reached by this user "
        f"(nobody), who runs check-config, nor by any user but root: {etc} (mode 0700, owner "
        f"root, group root) lets no other user enter it; `voipgw run` as any user but root "
        f"refuses to start (let the service's user enter it: chgrp SERVICE-GROUP {etc} && "
        f"chmod g+x {etc})\n"
        for key, file in (("certificate", pair.certificate), ("private_key", pair.key))
    )


def test_a_missing_key_is_still_said_not_to_exist(shared: Path) -> None:
    """ENOENT, not EACCES: the message of earlier releases, byte for byte."""
    (shared / "pki").mkdir(mode=0o755)
    pair = TestPki(shared / "pki").ca("CA").issue("gateway")
    missing = shared / "pki" / "missing.key"
    path = tls_config(shared, attrs.evolve(pair, key=missing), service_state(shared))
    code, _out, err = check_config_as_nobody(path)
    assert code == cli.EXIT_USAGE
    assert err == (
        f"voipgw: configuration error: {path}: [plugins.tls] private_key: {missing} does not "
        "exist or is not a file\n"
    )


# -- item 2: the certificate is checked when only the key cannot be read -------------------


def test_the_certificate_of_a_key_this_user_may_not_read_is_checked(shared: Path) -> None:
    """It was left unchecked with the key: a certificate file that is not PEM passed
    check-config (exit 0) and stopped `voipgw run`."""
    (shared / "pki").mkdir(mode=0o755)
    pair = TestPki(shared / "pki").ca("CA").issue("gateway")
    owned_by_service(pair.key)  # mode 600, the service's: nobody may not read it
    pair.certificate.write_text("not a certificate\n")
    pair.certificate.chmod(0o644)
    path = tls_config(shared, pair, service_state(shared))
    code, out, err = check_config_as_nobody(path)
    assert (code, out) == (cli.EXIT_USAGE, ""), err
    error, warning = err.splitlines()
    assert error.startswith(
        f"voipgw: configuration error: {path}: [plugins.tls] certificate: {pair.certificate}: "
        "not a usable certificate chain ("
    )
    assert warning == (
        f"voipgw: warning: {path}: [plugins.tls] private_key: {pair.key} cannot be read by "
        "this user (nobody), who runs check-config, so it was not checked: the service's user "
        "(its owner, daemon, most likely) may be allowed to; `voipgw run` as a user who may "
        "not refuses to start (check it as that user: sudo -u daemon voipgw check-config FILE)"
    )
    # A good certificate: the warning alone.
    shutil.copyfile(shared / "pki" / "CA.crt", pair.certificate)
    code, out, err = check_config_as_nobody(path)
    assert code == cli.EXIT_OK, err
    assert err == warning + "\n"


# -- item 5: CA bundles, CRLs, MIKEY keys, interception credentials: warnings -------------


def crl_config(shared: Path, state: Path) -> tuple[Path, Path]:
    (shared / "pki").mkdir(mode=0o755)
    ca = TestPki(shared / "pki").ca("CA")
    pair = ca.issue("gateway")
    crl = ca.crl(shared / "pki" / "ca.crl", revoked=[])
    for file in (shared / "pki").iterdir():
        file.chmod(0o644)
    extra = f'ca_bundles = ["{ca.certificate}"]\ncrl_files = ["{crl}"]\n'
    return tls_config(shared, pair, state, extra), crl


def mikey_config(shared: Path, state: Path) -> tuple[Path, Path]:
    keys = shared / "mikey-keys.toml"
    keys.write_text('[accounts]\nalice = "' + "00" * 16 + '"\n')
    table = f'[plugins.mikey]\noffer_modes = ["psk"]\npsk_file = "{keys}"\n'
    return write_config(shared, state, table, '"udp", "mikey"'), keys


def intercept_config(shared: Path, state: Path) -> tuple[Path, Path]:
    (shared / "pki").mkdir(mode=0o755)
    ca = TestPki(shared / "pki").ca("CA")
    x1 = ca.issue("x1")
    for file in (shared / "pki").iterdir():
        file.chmod(0o644)
    table = (
        f'[plugins.intercept]\nx1_certificate = "{x1.certificate}"\nx1_private_key = '
        f'"{x1.key}"\nx1_ca = "{ca.certificate}"\nx1_listen = "127.0.0.1:8443"\n'
        'admf_identifiers = ["admf-1"]\ndelivery_tls = false\n'
    )
    return write_config(shared, state, table, '"udp", "intercept"'), x1.key


def bundle_config(shared: Path, state: Path) -> tuple[Path, Path]:
    path, _crl = crl_config(shared, state)
    return path, Path(path.read_text().split('ca_bundles = ["')[1].split('"')[0])


@pytest.mark.parametrize(
    ("build", "table", "key"),
    [
        (crl_config, "plugins.tls", "crl_files"),
        (bundle_config, "plugins.tls", "ca_bundles"),
        (mikey_config, "plugins.mikey", "psk_file"),
        (intercept_config, "plugins.intercept", "x1_private_key"),
    ],
)
def test_a_file_only_the_service_may_read_is_a_warning(
    shared: Path,
    build: Callable[[Path, Path], tuple[Path, Path]],
    table: str,
    key: str,
) -> None:
    """They were check-config errors ("cannot read ..."), as the keys were before session 35;
    one the service's user may not read either stays an error."""
    path, file = build(shared, service_state(shared))
    owned_by_service(file)
    code, out, err = check_config_as_nobody(path)
    assert code == cli.EXIT_OK, err
    assert out.endswith(")\n") and ": OK (" in out
    assert err == (
        f"voipgw: warning: {path}: [{table}] {key}: {file} cannot be read by this user "
        "(nobody), who runs check-config, so it was not checked: the service's user (its "
        "owner, daemon, most likely) may be allowed to; `voipgw run` as a user who may not "
        "refuses to start (check it as that user: sudo -u daemon voipgw check-config FILE)\n"
    )
    # Mode 600 of root's (copied with sudo): the service's user may not read it either.
    os.chown(file, 0, 0)
    code, _out, err = check_config_as_nobody(path)
    assert code == cli.EXIT_USAGE
    assert err.startswith(
        f"voipgw: configuration error: {path}: [{table}] {key}: {file} cannot be read by this "
        "user (nobody), who runs check-config, nor by daemon, the owner of the state_dir"
    ), err


# -- item 4: what decides is tried, not asked of access(2) --------------------------------


def test_a_key_the_effective_user_may_not_read_is_the_warning_though_access_says_yes(
    shared: Path,
) -> None:
    """A setuid wrapper (real user root, effective nobody): access(2) answered for root, so
    check-config read the key and failed with an error instead of the warning."""
    (shared / "pki").mkdir(mode=0o755)
    pair = TestPki(shared / "pki").ca("CA").issue("gateway")
    pair.certificate.chmod(0o644)
    owned_by_service(pair.key)
    path = tls_config(shared, pair, service_state(shared))
    code, _out, err = check_config_as_nobody(path, real_uid_root=True)
    assert code == cli.EXIT_OK, err
    assert f"[plugins.tls] private_key: {pair.key} cannot be read by this user" in err


# -- item 3: existing directories and files the plugins and the store write ---------------


def test_an_existing_plugin_state_dir_this_user_may_not_write_in(shared: Path) -> None:
    """The dtls plugin's certificate directory, made by a `voipgw run` as root: check-config
    and run passed, and the first DTLS offer failed."""
    assert DAEMON is not None
    state = service_state(shared)
    (state / "dtls").mkdir(mode=0o755)  # root's
    table = f'[plugins.dtls]\nstate_dir = "{state}"\n'
    path = write_config(shared, state, table, '"udp", "dtls"')
    code, _out, err = check_config_as_nobody(path)
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [plugins.dtls] state_dir: {state / 'dtls'} is not writable "
        "by this user (nobody), who runs check-config: the DTLS certificate (dtls plugin) "
        "cannot be written there by this user; the service's user may be allowed to; `voipgw "
        "run` as a user who is not refuses to start (check it as that user: sudo -u USER "
        "voipgw check-config FILE)\n"
    )
    assert run_as_nobody(path) == (
        f"{path}: [plugins.dtls] state_dir: {state / 'dtls'} is not writable by this user "
        "(nobody): the DTLS certificate (dtls plugin) cannot be written there"
    )
    # As root (a deploy script): the state_dir's owner, daemon, may not write in it.
    code, _out, err = check_config(path)
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [plugins.dtls] state_dir: {state / 'dtls'} can be written "
        f"in by root, who runs check-config, but not by daemon, the owner of {state} (the user "
        "`voipgw run` created it as, most likely): mode 0755, owner root; so the DTLS "
        "certificate (dtls plugin) cannot be written there as daemon; `voipgw run` as daemon "
        f"refuses to start (chown daemon {state / 'dtls'})\n"
    )
    os.chown(state / "dtls", DAEMON.pw_uid, DAEMON.pw_gid)
    (state / "dtls").chmod(0o777)
    assert run_as_nobody(path) == "started"


def test_a_recordings_directory_this_user_may_not_write_in(shared: Path) -> None:
    state = service_state(shared)
    recordings = shared / "recordings"
    recordings.mkdir(mode=0o755)  # root's
    table = f'[plugins.recorder]\nall_calls = true\ndirectory = "{recordings}"\n'
    path = write_config(shared, state, table, '"udp", "recorder"')
    assert run_as_nobody(path) == (
        f"{path}: [plugins.recorder] directory: {recordings} is not writable by this user "
        "(nobody): the recordings (recorder plugin) cannot be written there"
    )


def test_a_root_owned_store_file_in_a_writable_state_dir(shared: Path) -> None:
    """`voipgw run` once as root left voipgw.sqlite3 of root's, mode 0644: SQLite opened it
    read-only and the first REGISTER failed ("attempt to write a readonly database")."""
    state = service_state(shared)
    database = state / "voipgw.sqlite3"
    database.write_bytes(b"")
    database.chmod(0o644)  # root's
    path = write_config(shared, state, "", '"udp"')
    assert run_as_nobody(path) == (
        f"{path}: [gateway] state_dir: {database} is not writable by this user (nobody) (mode "
        f"0644, owner root): the SQLite store cannot be written (chown nobody {database})"
    )
    code, out, err = check_config_as_nobody(path)
    assert code == cli.EXIT_OK, err
    assert out.endswith("OK (1 plugins: udp)\n")
    assert err == (
        f"voipgw: warning: {path}: [gateway] state_dir: {database} is not writable by this "
        "user (nobody) (mode 0644, owner root), who runs check-config: the SQLite store cannot "
        "be written by this user; the service's user may be allowed to; `voipgw run` as a "
        "user who is not refuses to start (check it as that user: sudo -u USER voipgw "
        "check-config FILE)\n"
    )
    # As root (a deploy script): the state_dir's owner, daemon, may not write it.
    code, _out, err = check_config(path)
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [gateway] state_dir: {database} can be written by root, "
        f"who runs check-config, but not by daemon, the owner of {state} (the user `voipgw "
        "run` created it as, most likely): mode 0644, owner root; `voipgw run` as daemon "
        f"refuses to start (chown daemon {database})\n"
    )
    owned_by_service(database, mode=0o666)
    assert run_as_nobody(path) == "started"


def test_a_store_file_of_the_service_user_without_u_w_is_told_chmod(shared: Path) -> None:
    """The file is the service user's already, mode 0444: `chown USER FILE` (what the
    messages said) changes nothing; `chmod u+w FILE` is the remedy."""
    state = service_state(shared)
    database = state / "voipgw.sqlite3"
    database.write_bytes(b"")
    owned_by_service(database, mode=0o444)
    path = write_config(shared, state, "", '"udp"')
    code, _out, err = check_config(path)  # as root: daemon, the state_dir's owner, may not
    assert code == cli.EXIT_OK, err
    assert err.endswith(f"`voipgw run` as daemon refuses to start (chmod u+w {database})\n")
    assert DAEMON is not None
    os.chown(database, NOBODY.pw_uid if NOBODY else 0, DAEMON.pw_gid)
    assert run_as_nobody(path) == (
        f"{path}: [gateway] state_dir: {database} is not writable by this user (nobody) (mode "
        f"0444, owner nobody): the SQLite store cannot be written (chmod u+w {database})"
    )


def test_a_read_only_plugin_directory_holding_every_file_it_writes_runs(shared: Path) -> None:
    """A directory of root's (a `voipgw run` as root made it) holding the service user's
    MIKEY replay journal, WAL mode, with its -wal and -shm: SQLite creates nothing there, so
    the plugin works, as it did before this check, and as the SQLite store's state_dir does.
    One file missing (it would be created there): run's error, as for an empty directory."""
    state = service_state(shared)
    replay = state / "mikey"
    replay.mkdir(mode=0o755)  # root's
    files = [replay / name for name in ("replay.sqlite", "replay.sqlite-wal", "replay.sqlite-shm")]
    for file in files:
        file.write_bytes(b"")
    owned_by_service(*files, mode=0o666)
    path = write_config(shared, state, "", '"udp", "mikey"')
    assert run_as_nobody(path) == "started"
    code, _out, err = check_config_as_nobody(path)
    assert (code, err) == (cli.EXIT_OK, "")
    code, _out, err = check_config(path)  # as root: daemon, the state_dir's owner, may write
    assert (code, err) == (cli.EXIT_OK, "")
    files[-1].unlink()
    assert run_as_nobody(path) == (
        f"{path}: [plugins.mikey] state_dir: {replay} is not writable by this user (nobody): "
        "the MIKEY replay journal (mikey plugin) cannot be written there"
    )


def test_a_read_only_zrtp_directory_without_the_cache_runs(shared: Path) -> None:
    """ZRTP with ``cache = false`` only reads its ZID once it is there: a directory of root's
    holding it ran before this check. With the cache (a rollback journal made beside it at
    each write) the directory must be writable."""
    state = service_state(shared)
    zrtp = state / "zrtp"
    zrtp.mkdir(mode=0o755)  # root's
    (zrtp / "zid").write_text("00112233445566778899aabb\n")
    (zrtp / "zid").chmod(0o644)
    path = write_config(shared, state, "[plugins.zrtp]\ncache = false\n", '"udp", "zrtp"')
    assert run_as_nobody(path) == "started"
    path = write_config(shared, state, "", '"udp", "zrtp"')
    assert run_as_nobody(path) == (
        f"{path}: [plugins.zrtp] state_dir: {zrtp} is not writable by this user (nobody): "
        "the ZRTP ZID and secrets cache (zrtp plugin) cannot be written there"
    )


def test_the_directory_named_is_the_one_on_the_way_this_user_may_not_enter(shared: Path) -> None:
    """/etc/voipgw 0750 root:daemon holding tls/key.pem: the directory named is /etc/voipgw,
    where the way stops, not tls/ (which this user cannot even see)."""
    etc = shared / "etc"
    (etc / "tls").mkdir(parents=True)
    pair = TestPki(etc / "tls").ca("CA").issue("gateway")
    for path in (etc / "tls").iterdir():
        path.chmod(0o644)
    (etc / "tls").chmod(0o755)
    os.chown(etc, 0, grp.getgrnam("daemon").gr_gid)
    etc.chmod(0o750)
    path = tls_config(shared, pair, service_state(shared))
    assert run_as_nobody(path) == (
        f"{path}: [plugins.tls] certificate: {pair.certificate} cannot be reached by this "
        f"user (nobody): it may not enter {etc} (mode 0750, owner root, group daemon)"
    )


def test_a_recordings_directory_this_user_may_not_create(shared: Path) -> None:
    """Not there yet, in a directory of root's: the recorder made it at its first recording,
    which failed; `voipgw run` passed."""
    state = service_state(shared)
    parent = shared / "spool"
    parent.mkdir(mode=0o755)  # root's
    recordings = parent / "recordings"
    table = f'[plugins.recorder]\nall_calls = true\ndirectory = "{recordings}"\n'
    path = write_config(shared, state, table, '"udp", "recorder"')
    assert run_as_nobody(path) == (
        f"{path}: [plugins.recorder] directory: {recordings} cannot be created: {parent} is "
        "not writable by this user (nobody)"
    )
    code, _out, err = check_config_as_nobody(path)
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [plugins.recorder] directory: {recordings} cannot be "
        f"created: {parent} is not writable by this user (nobody), who runs check-config: "
        f"{AS_ANOTHER_USER.replace('may not', 'is not')}\n"
    )


def test_a_postgresql_gateways_read_only_state_dir_with_dtls_enabled_runs(shared: Path) -> None:
    """dtls is enabled by default and makes <state_dir>/dtls at the first DTLS offer. A
    PostgreSQL gateway's state_dir of root's, which this user may not write in, ran before
    config-36 (session 35 kept it so: it holds only the control socket); one that never sees
    a DTLS offer (SDES phones) must still start. check-config warns; run refuses only once
    the plugin's directory is there (made by a `voipgw run` as root) and not writable."""
    pytest.importorskip("psycopg")
    state = shared / "state"
    state.mkdir(mode=0o755)  # root's
    store = '[store]\nbackend = "postgresql"\ndsn = "dbname=x"\n'
    path = write_config(shared, state, store, '"udp", "dtls"')
    assert run_as_nobody(path) == "started"
    code, _out, err = check_config_as_nobody(path)
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [plugins.dtls] state_dir: {state} is not writable by this "
        "user (nobody), who runs check-config: the DTLS certificate (dtls plugin) cannot be "
        "made there by this user; `voipgw run` starts, and what needs it fails if the "
        "service's user may not either\n"
    )
    (state / "dtls").mkdir(mode=0o755)  # root's, made by a `voipgw run` as root
    assert run_as_nobody(path) == (
        f"{path}: [plugins.dtls] state_dir: {state / 'dtls'} is not writable by this user "
        "(nobody): the DTLS certificate (dtls plugin) cannot be written there"
    )


# -- session 37: the checks leave SQLite's locks alone -------------------------------------


def locked_while_checking(path: Path, database: Path, *, wal: bool) -> tuple[str, str]:
    """A child acting as ``nobody`` takes the write lock of ``database`` (``BEGIN IMMEDIATE``
    on its own connection) and runs ``voipgw run``'s checks (Gateway.check) in the same
    process; then another process (this test, as root) tries ``BEGIN IMMEDIATE`` too, and the
    child commits. What each got: the lock still held ("database is locked") or "taken" when
    the checks dropped it; "committed" or the child's error."""
    check_config(path)  # as root first: every module imported before the child drops root
    assert NOBODY is not None
    ready_read, ready_write = os.pipe()
    done_read, done_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(ready_read)
            os.close(done_write)
            os.setgroups([])
            os.setresgid(NOBODY.pw_gid, NOBODY.pw_gid, NOBODY.pw_gid)
            os.setresuid(NOBODY.pw_uid, NOBODY.pw_uid, NOBODY.pw_uid)
            holder = sqlite3.connect(database, isolation_level=None)
            if wal:
                holder.execute("PRAGMA journal_mode = WAL")
            holder.execute("BEGIN IMMEDIATE")  # RESERVED (WAL: the write lock, in -shm)
            os.write(ready_write, run_check(path).encode() + b"\n")
            os.read(done_read, 1)  # the parent has tried
            holder.execute("COMMIT")
            os.write(ready_write, b"committed")
        except BaseException as exc:  # said to the parent, which fails the test
            os.write(ready_write, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(0)
    os.close(ready_write)
    os.close(done_read)
    with os.fdopen(ready_read) as pipe:
        try:
            assert pipe.readline() == "started\n"
            other = sqlite3.connect(database, isolation_level=None, timeout=0)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                tried = "taken"
            except sqlite3.OperationalError as exc:
                tried = str(exc)
            finally:
                other.close()
        finally:
            os.close(done_write)
            os.waitpid(pid, 0)
        return tried, pipe.read()


@pytest.mark.parametrize(
    ("enable", "table", "directory", "name", "wal"),
    [
        ('"udp"', "", "", "voipgw.sqlite3", True),
        ('"udp", "zrtp"', "[plugins.zrtp]\ncache = true\n", "zrtp", "cache.sqlite", False),
    ],
)
def test_the_checks_leave_the_locks_of_a_database_this_process_holds(
    shared: Path, enable: str, table: str, directory: str, name: str, wal: bool
) -> None:
    """Closing any descriptor of a file drops every POSIX lock the process holds on it
    (https://www.sqlite.org/howtocorrupt.html §2.2): the write checks of config-36 opened and
    closed the database files, so a connection of the same process (a plugin's, opened at its
    registration: the intercept plugin's tasks) lost its lock and another process could write
    the database under it; in the rollback journal's mode the connection's commit then failed
    ("disk I/O error"). The SQLite store in WAL mode (the lock in -shm) and ZRTP's cache in
    the rollback journal's mode (the lock on the database itself)."""
    state = service_state(shared)
    folder = state / directory
    folder.mkdir(exist_ok=True)
    folder.chmod(0o777)
    database = folder / name
    sqlite3.connect(database).close()
    database.chmod(0o666)
    path = write_config(shared, state, table, enable)
    assert locked_while_checking(path, database, wal=wal) == ("database is locked", "committed")


# -- session 37: run names the directory of the metrics, STIR and store files too ----------


def metrics_tls(pair: Issued) -> tuple[str, str, str]:
    table = (
        f'[plugins.metrics]\ntls_certificate = "{pair.certificate}"\n'
        f'tls_private_key = "{pair.key}"\n'
    )
    return table, '"udp", "metrics"', f"[plugins.metrics] tls_certificate: {pair.certificate}"


def stir_key(pair: Issued) -> tuple[str, str, str]:
    table = (
        f'[plugins.stir_shaken]\nprivate_key = "{pair.key}"\nsign_trunks = ["carrier"]\n'
        'certificate_url = "https://cr.example/signer.pem"\n'
        '[[trunks]]\nname = "carrier"\naddress = "udp:192.0.2.1:5060"\n'
    )
    return table, '"udp", "stir_shaken"', f"[plugins.stir_shaken] private_key: {pair.key}"


def store_password(pair: Issued) -> tuple[str, str, str]:
    pytest.importorskip("psycopg")
    secret = pair.key.parent / "pgpass"
    secret.write_text("Sup3r-Secret\n")
    secret.chmod(0o600)
    table = f'[store]\nbackend = "postgresql"\ndsn = "dbname=x"\npassword_file = "{secret}"\n'
    return table, '"udp"', f"[store] password_file: {secret}"


@pytest.mark.parametrize("build", [metrics_tls, stir_key, store_password])
def test_run_names_the_directory_this_user_may_not_enter_for_every_file(
    shared: Path, build: Callable[[Issued], tuple[str, str, str]]
) -> None:
    """The metrics plugin's TLS pair, the STIR/SHAKEN signing key and the store's
    password_file in /etc/voipgw of mode 0750 root:daemon: `voipgw run` as a user in neither
    said "cannot read FILE: Permission denied" of a file it could not even see (check-config
    said it right, as `run` did of the tls plugin's files since session 36)."""
    etc, pair = closed_directory(shared, 0o750, "daemon")
    table, enable, named = build(pair)
    path = write_config(shared, service_state(shared), table, enable)
    said = run_as_nobody(path)
    assert said.startswith(f"{path}: {named} cannot be reached by this user (nobody): it may "), (
        said
    )
    assert f"not enter {etc} (mode 0750, owner root, group daemon)" in said


def test_a_held_file_is_asked_of_access_for_the_effective_user(shared: Path) -> None:
    """A file held for reading only, writing asked: access(2) answers for the effective
    user (AT_EACCESS), not the real one, which a setuid wrapper leaves root: root's file of
    mode 0644, held by the process (inherited), is not writable by an effective nobody."""
    path = shared / "database"
    path.write_bytes(b"")
    path.chmod(0o644)
    with open(path, "rb"):  # the child inherits the descriptor
        answers = as_nobody(
            lambda: [
                config_mod.may_open(path, os.O_RDONLY),
                config_mod.may_open(path, os.O_WRONLY),
            ],
            real_uid_root=True,
        )
    assert answers == [True, False]


# -- session 38: symbolic links out of the state_dir ------------------------------------------


def test_a_plugin_directory_linked_out_of_the_state_dir_is_named_with_where_it_leads(
    shared: Path,
) -> None:
    """<state_dir>/dtls a symbolic link to a directory of root's elsewhere: what the kernel
    writes in (and what a chown changes) is the link's target, which the messages named
    only by the link's name, and the remedy chown'd the name."""
    state = service_state(shared)
    elsewhere = shared / "srv" / "dtls"
    elsewhere.mkdir(parents=True, mode=0o755)  # root's
    (state / "dtls").symlink_to(elsewhere)
    shown = f"{state / 'dtls'} (a symbolic link to {elsewhere})"
    table = f'[plugins.dtls]\nstate_dir = "{state}"\n'
    path = write_config(shared, state, table, '"udp", "dtls"')
    assert run_as_nobody(path) == (
        f"{path}: [plugins.dtls] state_dir: {shown} is not writable by this user (nobody): "
        "the DTLS certificate (dtls plugin) cannot be written there"
    )
    code, _out, err = check_config(path)  # as root: daemon, the state_dir's owner, may not
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [plugins.dtls] state_dir: {shown} can be written in by root, "
        f"who runs check-config, but not by daemon, the owner of {state} (the user `voipgw "
        "run` created it as, most likely): mode 0755, owner root; so the DTLS certificate "
        "(dtls plugin) cannot be written there as daemon; `voipgw run` as daemon refuses to "
        f"start (chown daemon {elsewhere})\n"
    )
    os.chown(elsewhere, DAEMON.pw_uid if DAEMON else 0, 0)
    elsewhere.chmod(0o777)
    assert run_as_nobody(path) == "started"


# -- session 38: the tls transport's fetched CRLs (<state_dir>/tls/crls) ---------------------


def fetching_tls_config(shared: Path, state: Path) -> Path:
    """A tls listener with its own certificate, fetching its CA's CRL over HTTP: each fetched
    CRL is saved under <state_dir>/tls/crls, at any hour, for a start without network."""
    etc = shared / "etc"
    etc.mkdir()
    ca = TestPki(etc).ca("CA")
    pair = ca.issue("gateway")
    for path in etc.iterdir():
        path.chmod(0o644)
    extra = f'ca_bundles = ["{ca.certificate}"]\ncrl_urls = ["http://127.0.0.1:1/ca.crl"]\n'
    return tls_config(shared, pair, state, extra)


def warnings_of_run(path: Path) -> list[str]:
    """What ``voipgw run`` as nobody logs of the directories it checks (it starts)."""

    def check() -> list[str]:
        config = config_mod.from_toml(path)
        gateway = Gateway(config, load_plugins(config))
        gateway.check()
        return [str(warning) for warning in gateway.access_warnings]

    check_config(path)
    said = as_nobody(check)
    assert isinstance(said, list)
    return said


def test_a_crl_directory_the_service_may_not_write_in_is_a_warning_of_run_and_check_config(
    shared: Path,
) -> None:
    """<state_dir>/tls of root's (a `voipgw run` as root made it): check-config and run said
    nothing, and each CRL fetched was used but not saved, a warning in the log at whatever
    hour the fetch came, and a start without network went without it. Said at start-up, as
    a warning (the gateway runs without the saved copies): [gateway] state_dir is the key."""
    state = service_state(shared)
    (state / "tls").mkdir(mode=0o755)  # root's
    path = fetching_tls_config(shared, state)
    tail = (
        "the fetched CRLs (tls plugin), kept for a start without network, cannot be written "
        "there; `voipgw run` starts, and runs without it"
    )
    assert warnings_of_run(path) == [
        f"{path}: [gateway] state_dir: {state / 'tls'} is not writable by this user (nobody): "
        f"{tail}"
    ]
    code, _out, err = check_config_as_nobody(path)
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [gateway] state_dir: {state / 'tls'} is not writable by "
        "this user (nobody), who runs check-config (the service's user may be allowed to: "
        f"check it as that user): {tail}\n"
    )
    code, _out, err = check_config(path)  # as root: daemon, the state_dir's owner, may not
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [gateway] state_dir: {state / 'tls'} can be written by "
        f"root, who runs check-config, but not by daemon, the owner of {state} (the user "
        f"`voipgw run` created it as, most likely): mode 0755, owner root: {tail}\n"
    )
    # The service's: nothing to say; nor without fetching.
    owned_by_service(state / "tls", mode=0o777)
    assert warnings_of_run(path) == []
    assert check_config(path)[2] == ""


def test_without_fetching_the_crl_directory_is_not_checked(shared: Path) -> None:
    state = service_state(shared)
    (state / "tls").mkdir(mode=0o755)  # root's
    etc = shared / "etc"
    etc.mkdir()
    pair = TestPki(etc).ca("CA").issue("gateway")
    for file in etc.iterdir():
        file.chmod(0o644)
    path = tls_config(shared, pair, state)
    assert warnings_of_run(path) == []
    assert check_config_as_nobody(path)[::2] == (cli.EXIT_OK, "")


# -- session 39 (config-39): the generated certificate, files read back from state_dir ------


def generated_tls_config(shared: Path, state: Path, listen: str = "tls:127.0.0.1:0") -> Path:
    """A tls listener without a certificate of its own: it takes the generated one from
    <state_dir>/tls (gateway.crt, gateway.key), made there at its first start."""
    path = shared / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{state}"\n[sip]\nlisten = ["udp:127.0.0.1:0", "{listen}"]\n'
        '[plugins]\nenable = ["udp", "tls"]\n'
    )
    path.chmod(0o644)
    return path


def test_a_generated_certificate_directory_the_service_may_not_write_in(shared: Path) -> None:
    """<state_dir>/tls of root's, empty (a `voipgw run` as root stopped before it wrote the
    pair, or someone made it): check-config said nothing, and `voipgw run` stopped when the
    listener started, after the store had opened. Judged as the plugins' directories are,
    before anything opens; only when a listener takes the generated certificate."""
    state = service_state(shared)
    (state / "tls").mkdir(mode=0o755)  # root's
    path = generated_tls_config(shared, state)
    what = "the generated certificate of the tls listeners"
    assert run_as_nobody(path) == (
        f"{path}: [gateway] state_dir: {state / 'tls'} is not writable by this user (nobody): "
        f"{what} cannot be written there"
    )
    code, _out, err = check_config_as_nobody(path)
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [gateway] state_dir: {state / 'tls'} is not writable by "
        f"this user (nobody), who runs check-config: {what} cannot be written there by this "
        f"user; the service's user may be allowed to; `voipgw run` as a user who is not "
        "refuses to start (check it as that user: sudo -u USER voipgw check-config FILE)\n"
    )
    code, _out, err = check_config(path)  # as root: daemon, the state_dir's owner, may not
    assert code == cli.EXIT_OK, err
    assert f"{state / 'tls'} can be written in by root, who runs check-config, but not by " in err
    # No listener takes it (udp only), or the listener has a certificate of its own: nothing.
    assert run_as_nobody(generated_tls_config(shared, state, "udp:127.0.0.1:0")) == "started"
    etc = shared / "etc"
    etc.mkdir()
    pair = TestPki(etc).ca("CA").issue("gateway")
    for file in etc.iterdir():
        file.chmod(0o644)
    path.write_text(
        path.read_text()
        + f'[plugins.tls]\ncertificate = "{pair.certificate}"\nprivate_key = "{pair.key}"\n'
    )
    assert run_as_nobody(path) == "started"
    assert check_config_as_nobody(path)[::2] == (cli.EXIT_OK, "")


def test_a_generated_key_left_by_root_is_said_before_listening(shared: Path) -> None:
    """`sudo voipgw run` once wrote <state_dir>/tls/gateway.key as root, mode 0600: the
    service's next start stopped at the listener ("cannot read ... Permission denied"). Said
    by run and check-config before anything opens, with the remedy; the key never shown."""
    assert DAEMON is not None
    state = service_state(shared)
    tls = state / "tls"
    tls.mkdir()
    tls.chmod(0o777)
    path = generated_tls_config(shared, state)
    run_check(path)  # nothing made: check writes nothing
    assert not any(tls.iterdir())
    ensure_self_signed(tls, ["127.0.0.1"], now=datetime.datetime.now(datetime.UTC))
    key = tls / "gateway.key"
    key_text = key.read_text()
    (tls / "gateway.crt").chmod(0o644)
    assert run_as_nobody(path) == (
        f"{path}: [gateway] state_dir: {key} is owned by root and not readable by nobody: "
        "chown it to nobody or remove it (the key of the generated certificate of the tls "
        "listeners)"
    )
    code, _out, err = check_config_as_nobody(path)  # nor may daemon, the state_dir's owner
    assert code == cli.EXIT_USAGE
    assert err == (
        f"voipgw: configuration error: {path}: [gateway] state_dir: {key} is owned by root "
        "and not readable by nobody, who runs check-config, nor by daemon, the owner of "
        f"{state} (the user `voipgw run` created it as, most likely): chown it to daemon or "
        "remove it (the key of the generated certificate of the tls listeners)\n"
    )
    code, _out, err = check_config(path)  # as root, which reads it: a warning
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [gateway] state_dir: {key} is owned by root and not "
        f"readable by daemon, the owner of {state} (the user `voipgw run` created it as, most "
        "likely): chown it to daemon or remove it (the key of the generated certificate of "
        "the tls listeners); `voipgw run` as daemon refuses to start\n"
    )
    assert key_text.split("\n")[1] not in err
    os.chown(key, DAEMON.pw_uid, DAEMON.pw_gid)
    assert check_config(path)[::2] == (cli.EXIT_OK, "")
    os.chown(key, NOBODY.pw_uid if NOBODY else 0, 0)
    assert run_as_nobody(path) == "started"


def test_a_generated_key_of_roots_the_services_group_may_read_is_not_refused(
    shared: Path,
) -> None:
    """The check is for a key nobody but root may read, not for every key of root's: one an
    administrator made root's on purpose and readable by the service's group (mode 0640) is
    what the service reads, and neither run as a user of that group nor check-config as root
    says anything of it."""
    assert DAEMON is not None and NOBODY is not None
    state = service_state(shared)
    tls = state / "tls"
    tls.mkdir()
    tls.chmod(0o755)
    path = generated_tls_config(shared, state)
    ensure_self_signed(tls, ["127.0.0.1"], now=datetime.datetime.now(datetime.UTC))
    key = tls / "gateway.key"
    (tls / "gateway.crt").chmod(0o644)
    os.chown(key, 0, DAEMON.pw_gid)  # root:daemon, and daemon owns the state_dir
    key.chmod(0o640)
    assert check_config(path)[::2] == (cli.EXIT_OK, "")
    os.chown(key, 0, NOBODY.pw_gid)  # root:nogroup, and the service runs as nobody
    assert run_as_nobody(path) == "started"


@pytest.mark.parametrize(
    ("enable", "name", "what"),
    [
        ("dtls", "dtls/private_key.pem", "the DTLS certificate's key (dtls plugin)"),
        ("dtls", "dtls/certificate.pem", "the DTLS certificate (dtls plugin)"),
        ("zrtp", "zrtp/zid", "the ZRTP ZID (zrtp plugin)"),
    ],
)
def test_a_plugin_file_left_by_root_in_the_state_dir_is_said(
    shared: Path, enable: str, name: str, what: str
) -> None:
    """The dtls plugin's key (0600) or the zrtp plugin's ZID left root's by a `voipgw run`
    as root, in a directory the service may write in: the first DTLS or ZRTP call failed."""
    state = service_state(shared)
    file = state / name
    file.parent.mkdir()
    file.parent.chmod(0o777)
    file.write_text("000102030405060708090a0b\n")
    file.chmod(0o600)  # root's
    path = write_config(shared, state, "", f'"udp", "{enable}"')
    assert run_as_nobody(path) == (
        f"{path}: [plugins.{enable}] state_dir: {file} is owned by root and not readable by "
        f"nobody: chown it to nobody or remove it ({what})"
    )
    file.chmod(0o644)
    assert run_as_nobody(path) == "started"


def test_check_config_as_the_state_dirs_owner_refuses_a_key_it_may_not_read(
    shared: Path,
) -> None:
    """`sudo -u voipgw voipgw check-config FILE`, what the warnings advise: the service's own
    answer, an error as `run`'s, not a warning that "the service's user may be allowed to"."""
    assert NOBODY is not None
    state = shared / "state"
    state.mkdir()
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    zid = state / "zrtp" / "zid"
    zid.parent.mkdir()
    os.chown(zid.parent, NOBODY.pw_uid, NOBODY.pw_gid)
    zid.write_text("000102030405060708090a0b\n")
    zid.chmod(0o600)  # root's
    path = write_config(shared, state, "", '"udp", "zrtp"')
    code, _out, err = check_config_as_nobody(path)
    assert code == cli.EXIT_USAGE
    assert err == (
        f"voipgw: configuration error: {path}: [plugins.zrtp] state_dir: {zid} is owned by root "
        "and not readable by nobody: chown it to nobody or remove it (the ZRTP ZID (zrtp "
        "plugin))\n"
    )


# -- session 40 (tls-40): saved CRLs read back, the store's files as the state_dir's owner ----


def test_a_saved_crl_left_by_root_is_a_warning_of_run_and_check_config(shared: Path) -> None:
    """A `voipgw run` as root saved a fetched CRL (and its URL) root's, mode 0600, in a
    <state_dir>/tls/crls the service may write in: the next start did not use it (`the saved
    CRL ... is not used: EACCES`), and until the fetch replaced it that CA's certificates were
    not checked for revocation; check-config said nothing. Said before anything starts, as the
    generated certificate's files are, but as a warning: the gateway fetches it again."""
    state = service_state(shared)
    crls = state / "tls" / "crls"
    crls.mkdir(parents=True)
    for directory in (state / "tls", crls):
        owned_by_service(directory, mode=0o777)
    saved = crls / "0123456789abcdef0123456789abcdef.crl"  # sha256(URL)[:32], as crl_fetch names it
    url = saved.with_suffix(".url")
    saved.write_bytes(b"\x30\x00")
    url.write_text("http://127.0.0.1:1/ca.crl\n")
    for file in (saved, url):
        file.chmod(0o600)  # root's
    path = fetching_tls_config(shared, state)
    tail = "; `voipgw run` starts, and runs without it"

    def unread(file: Path, reader: str, what: str, chown_to: str = "nobody") -> str:
        return (
            f"{path}: [gateway] state_dir: {file} is owned by root and not readable by "
            f"{reader}: chown it to {chown_to} or remove it ({what}){tail}"
        )

    crl_what, url_what = "a fetched CRL (tls plugin)", "a fetched CRL's URL (tls plugin)"
    assert warnings_of_run(path) == [
        unread(saved, "nobody", crl_what),
        unread(url, "nobody", url_what),
    ]
    code, _out, err = check_config_as_nobody(path)  # nor may daemon, the state_dir's owner
    assert code == cli.EXIT_OK, err
    of_state = (
        f"nobody, who runs check-config, nor by daemon, the owner of {state} (the user "
        "`voipgw run` created it as, most likely)"
    )
    assert err == (
        f"voipgw: warning: {unread(saved, of_state, crl_what, 'daemon')}\n"
        f"voipgw: warning: {unread(url, of_state, url_what, 'daemon')}\n"
    )
    code, _out, err = check_config(path)  # as root, which reads them: daemon may not
    assert code == cli.EXIT_OK, err
    assert f"{saved} is owned by root and not readable by daemon, the owner of " in err
    assert err.count(tail) == 2, err
    owned_by_service(saved, url, mode=0o644)
    assert warnings_of_run(path) == []
    assert check_config(path)[2] == ""


def test_check_config_as_the_state_dirs_owner_refuses_a_store_file_it_may_not_write(
    shared: Path,
) -> None:
    """`sudo -u voipgw voipgw check-config FILE`, what the warnings advise, with the SQLite
    store left root's (mode 0644) by a `voipgw run` as root: check-config warned that "the
    service's user may be allowed to" (exit 0) though it is that user, and `voipgw run` then
    refused to start. The service's own answer now: `run`'s error, exit 2."""
    assert NOBODY is not None
    state = shared / "state"
    state.mkdir()
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    database = state / "voipgw.sqlite3"
    database.write_bytes(b"")
    database.chmod(0o644)  # root's
    path = write_config(shared, state, "", '"udp"')
    message = (
        f"{path}: [gateway] state_dir: {database} is not writable by this user (nobody) (mode "
        f"0644, owner root): the SQLite store cannot be written (chown nobody {database})"
    )
    assert run_as_nobody(path) == message
    code, out, err = check_config_as_nobody(path)
    assert (code, out) == (cli.EXIT_USAGE, ""), err
    assert err == f"voipgw: configuration error: {message}\n"
    os.chown(database, NOBODY.pw_uid, NOBODY.pw_gid)  # chowned, as the remedy says
    assert run_as_nobody(path) == "started"
    assert check_config_as_nobody(path)[::2] == (cli.EXIT_OK, "")
