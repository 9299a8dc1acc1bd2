"""Pre-shared keys of MIKEY's PSK and DH-HMAC modes, one per account or trunk.

The file named by ``[plugins.mikey] psk_file`` is TOML::

    [accounts]
    alice = "3f0c...64 hexadecimal digits..."
    [trunks]
    carrier = "..."

Each key is 16 to 64 octets written in hexadecimal (RFC 3830 §4.1.4 feeds it to the PRF, which
takes any length; 32 random octets are the advice). The file must be readable by its owner
only: the gateway refuses to start when group or others may read it (the error names the file).
Keys never appear in logs, errors or ``repr``: errors name the file, the table and the entry.
"""

from __future__ import annotations

import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path

__all__ = ["PskError", "PskStore"]

_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){16,64}")
_KINDS = {"accounts": "account", "trunks": "trunk"}


class PskError(ValueError):
    """The pre-shared key file is unusable (the gateway must not start). Never quotes a key."""


class PskStore:
    """Pre-shared keys by (kind, name): kind "account" or "trunk"."""

    def __init__(self, keys: Mapping[tuple[str, str], bytes], source: str = "") -> None:
        self._keys = dict(keys)
        self.source = source

    def __repr__(self) -> str:
        return f"<PskStore {self.source or '(memory)'}: {len(self._keys)} keys>"

    def __len__(self) -> int:
        return len(self._keys)

    def names(self, kind: str) -> tuple[str, ...]:
        """The names of kind ``kind`` ("account" or "trunk") that have a key, in file order."""
        return tuple(name for key_kind, name in self._keys if key_kind == kind)

    def key_for(self, kind: str, name: str | None) -> bytes | None:
        """The key of account or trunk ``name``, or None."""
        if name is None:
            return None
        return self._keys.get((kind, name))

    @classmethod
    def from_file(cls, path: str | Path) -> PskStore:
        """Read and check the file. Raises :class:`PskError` naming the file (and the entry)
        when it is missing, readable by group or others, not TOML, or holds a malformed key."""
        path = Path(path)
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise PskError(f"psk_file {path}: cannot read it ({exc.strerror})") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PskError(
                f"psk_file {path}: group or others may access it "
                f"(mode {stat.S_IMODE(mode):o}); make it readable by the gateway's user only "
                "(chmod 600)"
            )
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise PskError(f"psk_file {path}: cannot read it ({exc})") from None
        except tomllib.TOMLDecodeError:
            # The decoder's message may quote the offending line, i.e. a key: say less.
            raise PskError(f"psk_file {path}: not valid TOML") from None
        keys: dict[tuple[str, str], bytes] = {}
        for table, value in data.items():
            if table not in _KINDS or not isinstance(value, dict):
                raise PskError(f"psk_file {path}: unknown table [{table}]; known: accounts, trunks")
            for name, key in value.items():
                if not isinstance(key, str) or not _HEX.fullmatch(key):
                    raise PskError(
                        f"psk_file {path}: [{table}] {name}: expected 32 to 128 hexadecimal "
                        "digits (16 to 64 octets)"
                    )
                keys[(_KINDS[table], name)] = bytes.fromhex(key)
        return cls(keys, str(path))
