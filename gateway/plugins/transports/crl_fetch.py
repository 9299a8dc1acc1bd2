"""CRLs fetched over HTTP for the ``tls`` transport (``[plugins.tls] crl_urls`` and
``crl_distribution_points``), kept current without a cron job.

Where from: a URL configured per CA (``crl_urls``), or the http URL of the CRL Distribution
Points extension (RFC 5280 §4.2.1.13) of the certificates a CA of ``ca_bundles`` issued: the
gateway's own and each peer's, learned at its first handshake (one set look-up per handshake).

When: at start-up (after the listeners started: no handshake waits for it), then at 3/4 of
each CRL's validity (:attr:`LoadedCrl.stale_at`, where the file-based check starts warning),
so a CA's late publication or a down server leaves a quarter of the validity for retries;
a failure is retried after :data:`RETRY_FIRST` seconds, doubling up to :data:`RETRY_MAX`.

Checked as a file of ``crl_files`` is (revocation.check_crl_untrusted: signed by a CA of
``ca_bundles``, complete, not indirect, with a nextUpdate), and current, as a reload requires;
one older than the CRL in use from that URL (lower cRLNumber) is refused too (a stale mirror).
The transport then uses it as a reloaded CRL file (:meth:`TlsTransport._use_fetched_crl`,
which builds the new TLS contexts in a worker thread and swaps them in on the loop).

Each fetched CRL is saved under ``<state_dir>/tls/crls/`` so that a restart without network
starts with it (the same staleness rules as a file at start-up: an expired one is loaded and
logged at ERROR), and is refreshed from its URL. The files are written in a worker thread, as
the parse is: each is written under a temporary name, flushed to disk and renamed over the old
one (:func:`_write_durably`), and an fsync waits for the disk, which on a busy or network disk
takes from milliseconds to seconds that every call's signalling would wait on the loop.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio
from cryptography import x509

from gateway.core.logs import log_exception
from gateway.core.sip.uri import redact_password
from gateway.plugins.transports.certificates import CertificateError
from gateway.plugins.transports.ocsp import OcspError, failure_text, http_get, parse_http_url
from gateway.plugins.transports.revocation import LoadedCrl, check_crl_untrusted

log = logging.getLogger(__name__)

#: A CRL of a phone vendor's CA is a few KiB; a large public CA's a few MiB. Larger is refused.
MAX_CRL_SIZE = 8 * 1024 * 1024
#: One fetch, connecting included, takes at most this long (s).
FETCH_TIMEOUT = 30.0
#: After a failed fetch (or a CRL the server has not renewed yet), ask again after this long,
#: doubling up to RETRY_MAX (s).
RETRY_FIRST = 60.0
RETRY_MAX = 3600.0
#: Fetches at once: one dead server does not delay the others; a bound, as each holds a
#: connection and up to MAX_CRL_SIZE bytes.
MAX_CONCURRENT_FETCHES = 4
#: Distinct URLs kept at most (learned from certificates): a bound on what peers can add.
MAX_URLS = 64
#: Where fetched CRLs are saved, under the state directory.
SAVED_DIR = Path("tls") / "crls"

GetCrl = Callable[[str], Awaitable[bytes]]


async def get_crl(url: str) -> bytes:
    """The body of an HTTP GET of ``url``, bounded in size (the caller bounds it in time)."""
    return await http_get(url, max_size=MAX_CRL_SIZE, peer="the CRL server")


def distribution_point_urls(certificate: x509.Certificate) -> tuple[str, ...]:
    """The http URLs of ``certificate``'s CRL Distribution Points (RFC 5280 §4.2.1.13) where
    its issuer's complete CRL is: distribution points limited to some reasons or naming
    another cRLIssuer (an indirect CRL) are skipped, as such CRLs are refused; ldap:, https:
    and malformed URLs too. Empty when there is none."""
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except (x509.ExtensionNotFound, ValueError):
        return ()
    urls: list[str] = []
    for point in points.value:
        if point.reasons is not None or point.crl_issuer is not None or not point.full_name:
            continue
        for name in point.full_name:
            if isinstance(name, x509.UniformResourceIdentifier):
                try:
                    parse_http_url(name.value)
                except ValueError:
                    continue
                urls.append(name.value)
    return tuple(dict.fromkeys(urls))


@attrs.define
class _Source:
    url: str
    due: float  # Unix time of the next fetch
    crl: LoadedCrl | None = None  # the last one fetched (or saved) from this URL
    failures: int = 0
    learned: bool = False  # from a certificate's distribution points, not crl_urls
    tried_at: float = 0.0  # Unix time the last fetch ended
    again: bool = False  # asked for again (a reload) while a fetch was under way


class CrlFetcher:
    """Keeps the CRL of each URL current; ``await use(crl)`` hands each new one to the transport,
    ``tick(now)`` lets it log what is due (a CRL going stale, expiring: logged at ERROR as for
    a file) even when no handshake happens. ``get``, ``wall_clock`` and ``in_thread`` are for
    tests."""

    def __init__(
        self,
        *,
        cas: Callable[[], Sequence[x509.Certificate]],
        use: Callable[[LoadedCrl], Awaitable[None]],
        tick: Callable[[float], None],
        get: GetCrl | None = None,
        wall_clock: Callable[[], float] = time.time,
        state_dir: Path | None = None,
    ) -> None:
        self._cas = cas
        self._use = use
        self._tick = tick
        self._get: GetCrl = get or get_crl
        self.wall_clock = wall_clock
        self.state_dir = state_dir
        #: Runs the parse and checks of a fetched CRL, and its save, off the event loop; tests
        #: on trio's autojump clock run them inline (the clock jumps while a worker thread runs).
        self.in_thread: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync
        self._sources: dict[str, _Source] = {}
        self._fetching: set[str] = set()  # the URLs being fetched now
        self._wake = trio.Event()
        #: Fetches by outcome ("ok", "failed"), for tests and the log.
        self.fetches: dict[str, int] = {"ok": 0, "failed": 0}

    def add(self, url: str, *, learned: bool = False) -> bool:
        """Fetch ``url`` from now on (at once); False when it is known already, or the bound
        on URLs is reached (logged). ``learned``: from a certificate (crl_distribution_points),
        forgotten when its CA leaves ca_bundles (:meth:`forget_untrusted`)."""
        if url in self._sources:
            return False
        if len(self._sources) >= MAX_URLS:
            log.warning(
                "tls: not fetching the CRL at %s: %d CRL URLs already",
                redact_password(url),
                MAX_URLS,
            )
            return False
        self._sources[url] = _Source(url, due=self.wall_clock(), learned=learned)
        self._wake.set()
        return True

    def refetch(self) -> None:
        """A reload (SIGHUP): fetch every URL again now, as an operator who just revoked a
        phone at the CA expects; one being fetched is fetched once more when that ends (its
        answer may predate the revocation). A URL whose last fetch failed keeps its count of
        failures (its backoff goes on growing) and is asked again no sooner than
        :data:`RETRY_FIRST` after that failure: a SIGHUP a minute (a certificate deploy hook)
        must not turn a dead server's backoff into a storm. At most
        :data:`MAX_CONCURRENT_FETCHES` at once, as always."""
        now = self.wall_clock()
        held = 0
        for source in self._sources.values():
            if source.url in self._fetching:
                source.again = True
                continue
            source.due = min(source.due, self._hurried(source, now))
            held += source.due > now
        if self._sources:
            log.info(
                "tls: reload: fetching %d CRL(s) again now%s",
                len(self._sources) - held,
                f"; {held} failing, asked again {RETRY_FIRST:g} s after its failure"
                if held
                else "",
            )
        self._wake.set()

    @staticmethod
    def _hurried(source: _Source, now: float) -> float:
        return now if source.failures == 0 else max(now, source.tried_at + RETRY_FIRST)

    def urls(self) -> tuple[str, ...]:
        return tuple(self._sources)

    def _saved_path(self, url: str) -> Path | None:
        if self.state_dir is None:
            return None
        digest = hashlib.sha256(url.encode()).hexdigest()[:32]
        return self.state_dir / SAVED_DIR / f"{digest}.crl"

    def load_saved(self, *, learned: bool) -> list[LoadedCrl]:
        """The saved CRLs of the known URLs that still pass the checks (current or not: the
        caller logs an expired one as it does a file at start-up); each one's URL is fetched
        again at its 3/4 (at once if past). A missing file is normal (never fetched).
        ``learned`` (crl_distribution_points): the URLs saved besides them are known again
        too, as the certificates that named them taught them in an earlier run, if their
        CRL's CA is still in ca_bundles. Saved CRLs nothing configured accounts for any more
        (:meth:`_prune_saved`) are removed first."""
        self._prune_saved(learned=learned)
        if learned and self.state_dir is not None:
            for named in sorted((self.state_dir / SAVED_DIR).glob("*.url")):
                try:
                    url = named.read_text(encoding="ascii").strip()
                    parse_http_url(url)
                except (OSError, ValueError):
                    continue  # a damaged file: the URL is learned again at a handshake
                if url not in self._sources and len(self._sources) < MAX_URLS:
                    self._sources[url] = _Source(url, due=self.wall_clock(), learned=True)
        loaded: list[LoadedCrl] = []
        now = self.wall_clock()
        for source in self._sources.values():
            path = self._saved_path(source.url)
            if path is None or not path.exists():
                continue
            try:
                crl = check_crl_untrusted(path.read_bytes(), source.url, self._cas())
            except (OSError, CertificateError) as exc:
                # A file's error in the system's words (ENOENT, EACCES), not Python's text
                # with the path again; a CRL refused (CertificateError) in ours.
                why = failure_text(exc)
                log.warning(
                    "tls: the saved CRL %s of %s is not used: %s",
                    path,
                    redact_password(source.url),
                    why,
                )
                continue
            source.crl = crl
            source.due = max(now, crl.stale_at)
            loaded.append(crl)
        return loaded

    def _prune_saved(self, *, learned: bool) -> None:
        """Remove the saved CRLs that no configured URL or CA accounts for, each logged at
        INFO: one whose URL ``crl_urls`` no longer lists (and, without ``learned``, that no
        certificate may name), one whose CA is no longer in ``ca_bundles`` (it would fail
        the signature check at every start, and a learned URL would be fetched for ever,
        each fetch refused), a ``.crl`` without its ``.url``, and a temporary file a crash
        left. At start-up, before anything is loaded; nothing else writes there then."""
        if self.state_dir is None:
            return
        directory = self.state_dir / SAVED_DIR
        if not directory.is_dir():
            return
        trusted = {ca.subject.public_bytes() for ca in self._cas()}
        kept: set[str] = set()
        for named in sorted(directory.glob("*.url")):
            try:
                url = named.read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError):
                continue  # damaged: replaced at the next save, or removed with its .crl below
            source = self._sources.get(url)
            if source is None and not learned:
                reason = "crl_urls no longer lists it"
            else:
                issuer = _saved_issuer(named.with_suffix(".crl"))
                if issuer is None or issuer[0] in trusted:
                    kept.add(named.stem)
                    continue
                reason = f"its CA {issuer[1]} is no longer in ca_bundles"
            self._remove_saved(named.with_suffix(".crl"), url, reason)
        for path in sorted(directory.iterdir()):
            stray = path.name.startswith(".") and path.name.endswith(".tmp")
            if stray or (path.suffix == ".crl" and path.stem not in kept):
                self._remove_saved(path, None, "left by a crash" if stray else "no URL names it")

    def _remove_saved(self, path: Path, url: str | None, reason: str) -> None:
        removed = []
        for each in {path, path.with_suffix(".url")} if url is not None else {path}:
            try:
                each.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                why = failure_text(exc)
                log.warning("tls: cannot remove the saved CRL file %s: %s", each, why)
                continue
            removed.append(each.name)
        if removed:
            log.info(
                "tls: removed the saved CRL %s%s: %s",
                " and ".join(sorted(removed)),
                "" if url is None else f" of {redact_password(url)}",
                reason,
            )

    def forget_untrusted(self, cas: Sequence[x509.Certificate]) -> list[str]:
        """After a reload read ``ca_bundles`` again: the URLs whose CRL in use no longer has
        its CA there. Their saved files are removed (logged at INFO); a learned URL is
        forgotten (its certificates' CA is no longer ours), one of ``crl_urls`` is fetched on,
        each fetch refused and logged until the CA is back."""
        trusted = {ca.subject.public_bytes() for ca in cas}
        dropped = []
        for source in list(self._sources.values()):
            if source.crl is None or source.crl.issuer_der in trusted:
                continue
            dropped.append(source.url)
            reason = f"its CA {source.crl.issuer} is no longer in ca_bundles"
            source.crl = None
            if source.learned:
                del self._sources[source.url]
            path = self._saved_path(source.url)
            if path is not None:
                self._remove_saved(path, source.url, reason)
        return dropped

    def _save(self, crl: LoadedCrl) -> None:
        """Write ``crl`` and its URL to the state directory: in a worker thread (it waits for
        the disk), never on the loop."""
        path = self._saved_path(crl.path)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_durably(path.with_suffix(".url"), (crl.path + "\n").encode("ascii"))
            _write_durably(path, crl.der_bytes())  # as fetched (DER), not encoded again
        except OSError as exc:
            why = failure_text(exc)
            log.warning("tls: cannot save the CRL of %s to %s: %s", crl.path, path, why)

    async def run(self) -> None:
        """Forever: sleep until the earliest fetch is due (or a URL is added, or a fetch ends),
        start the fetches that are due, at most :data:`MAX_CONCURRENT_FETCHES` at once: a dead
        server (:data:`FETCH_TIMEOUT`) does not hold up the other CAs' CRLs."""
        async with trio.open_nursery() as nursery:
            while True:
                now = self.wall_clock()
                self._tick(now)
                self._wake = trio.Event()
                for source in sorted(self._sources.values(), key=lambda s: s.due):
                    if len(self._fetching) >= MAX_CONCURRENT_FETCHES or source.due > now:
                        break
                    if source.url not in self._fetching:
                        self._fetching.add(source.url)
                        nursery.start_soon(self._fetch, source.url)
                # At the bound, the end of a fetch wakes us (those due wait for a free place).
                idle = len(self._fetching) < MAX_CONCURRENT_FETCHES
                due = [
                    s.due for s in self._sources.values() if idle and s.url not in self._fetching
                ]
                # Wake at least at each CRL's nextUpdate too (tick logs it expired).
                ends = [s.crl.next_update for s in self._sources.values() if s.crl is not None]
                wake_at = min([*due, *(end for end in ends if end > now)], default=None)
                if wake_at is None:
                    await self._wake.wait()
                else:
                    with trio.move_on_after(max(0.0, wake_at - now)):
                        await self._wake.wait()

    async def _fetch(self, url: str) -> None:
        try:
            await self.refresh(url)
        finally:
            self._fetching.discard(url)
            source = self._sources.get(url)
            if source is not None:
                source.tried_at = self.wall_clock()
                if source.again:
                    source.again = False
                    source.due = min(source.due, self._hurried(source, source.tried_at))
            self._wake.set()

    async def refresh(self, url: str) -> None:
        """Fetch ``url`` once, use the CRL if it passes, and schedule the next fetch."""
        source = self._sources.get(url)
        if source is None:
            return  # forgotten by a reload since this fetch was started (forget_untrusted)
        try:
            with trio.move_on_after(FETCH_TIMEOUT) as scope:
                data = await self._get(url)
            if scope.cancelled_caught:
                raise OcspError(f"no answer from {redact_password(url)} within {FETCH_TIMEOUT:g} s")
            cas = self._cas()
            # Parsing and verifying a CRL of some MiB takes tens of ms: not on the event loop,
            # where every call's signalling and media wait meanwhile.
            crl = await self.in_thread(check_crl_untrusted, data, url, cas)
            now = self.wall_clock()
            problem = crl.problem(now)
            if problem is not None:
                raise CertificateError(problem)
            if source.crl is not None and crl.issuer_der != source.crl.issuer_der:
                # The transport keeps one fetched CRL per URL: another CA's (signed, current,
                # by a CA of ca_bundles too) would drop the first CA's, and its certificates,
                # revoked ones included, would no longer be checked. Plain HTTP (RFC 5280
                # §4.2.1.13): whoever sits on the path can serve any CA's genuine CRL.
                raise CertificateError(
                    f"{url}: a CRL of {crl.issuer}, where it served the CRL of {source.crl.issuer}"
                )
            if source.crl is not None and _older(crl, source.crl):
                raise CertificateError(
                    f"{url}: the CRL of {crl.issuer} is older than the one in use "
                    f"(cRLNumber {crl.number} < {source.crl.number})"
                )
        except Exception as exc:
            # The server's bytes: whatever they make the parsers raise is a failed fetch.
            if not isinstance(exc, (OcspError, CertificateError)):
                log_exception(
                    log, "tls: fetching the CRL at %s failed unexpectedly", redact_password(url)
                )
            self._failed(source, failure_text(exc))
            return
        if self._sources.get(url) is not source:
            return  # forgotten by a reload while it was fetched: its CA is no longer ours
        self.fetches["ok"] += 1
        # The one in use again (a CA that has not published yet, asked again in the last
        # quarter): nothing to save or apply. Applying rebuilds every TLS context with it,
        # some hundred ms of a CPU (in a worker thread) for a CRL of some MiB, at each retry.
        unchanged = source.crl is not None and _same(crl, source.crl)
        source.crl = crl
        if crl.stale_at > now:
            source.failures = 0
            source.due = crl.stale_at
        else:
            # Already in its last quarter: the CA has not published a newer one yet.
            source.failures += 1
            source.due = now + _backoff(source.failures)
        if unchanged:
            return
        await self.in_thread(self._save, crl)
        if self._sources.get(url) is not source or source.crl is not crl:
            # A reload dropped its CA while the files were written (forget_untrusted removed
            # the old ones then): these go too, and the CRL is not used.
            path = self._saved_path(url)
            if path is not None:
                self._remove_saved(path, url, f"its CA {crl.issuer} is no longer in ca_bundles")
            return
        try:
            await self._use(crl)
        except Exception:
            # A bug applying it must not end the fetching (nor the listeners' nursery).
            log_exception(log, "tls: using the CRL fetched from %s failed", redact_password(url))

    def _failed(self, source: _Source, reason: str) -> None:
        self.fetches["failed"] += 1
        source.failures += 1
        delay = _backoff(source.failures)
        source.due = self.wall_clock() + delay
        log.warning(
            "tls: fetching the CRL at %s failed: %s; trying again in %g s%s",
            redact_password(source.url),
            reason,
            delay,
            "" if source.crl is None else f" (in use: {source.crl.describe()})",
        )


def _write_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash or power loss leaves the old file or the
    new one, never a half-written or empty one: written under a temporary name in the same
    directory (a rename within one file system is atomic), flushed to disk, renamed, and the
    directory flushed too (the rename is an entry of the directory: without it the file could
    come back under its old content, or not at all)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _saved_issuer(path: Path) -> tuple[bytes, str] | None:
    """The issuer (DER name and RFC 4514 text) of the saved CRL at ``path``; None when it is
    missing or unreadable (then nothing is said about its CA: it is not loaded, and the next
    fetch replaces it)."""
    try:
        crl = x509.load_der_x509_crl(path.read_bytes())
        return crl.issuer.public_bytes(), crl.issuer.rfc4514_string()
    except (OSError, ValueError):
        return None


def _backoff(failures: int) -> float:
    return min(RETRY_FIRST * 2.0 ** min(failures - 1, 16), RETRY_MAX)


def _same(new: LoadedCrl, current: LoadedCrl) -> bool:
    return (new.issuer_der, new.number, new.last_update) == (
        current.issuer_der,
        current.number,
        current.last_update,
    )


def _older(new: LoadedCrl, current: LoadedCrl) -> bool:
    if new.number is not None and current.number is not None:
        return new.number < current.number
    return new.last_update < current.last_update
