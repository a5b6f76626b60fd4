"""Keyed pseudonyms (HMAC-SHA256 with a key id) and the local keyring file that holds their keys."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from profiles.errors import KeyMaterialError
from profiles.files import private_folder
from profiles.types import IdentifierKind

MIN_KEY_BYTES = 32
KeyPurpose = Literal["pseudonym", "quarantine", "signing"]
KEY_PURPOSES: tuple[KeyPurpose, ...] = ("pseudonym", "quarantine", "signing")
"""Every key the key file holds: pseudonyms (HMAC), quarantine sealing (AES-GCM), and the
decision log's checkpoint signatures (an Ed25519 seed)."""


def key_id_for(secret: bytes) -> str:
    """A stable, non-reversible id for a key: lets digests name their key without revealing it."""
    return "k" + hmac.new(secret, b"enrich/key-id", hashlib.sha256).hexdigest()[:12]


def decode_secret(encoded: str, *, what: str) -> bytes:
    """Decode a base64 (standard or URL-safe) secret of at least 32 bytes, or raise."""
    text = encoded.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise KeyMaterialError(f"{what} is not valid base64") from None
    if len(raw) < MIN_KEY_BYTES:
        raise KeyMaterialError(
            f"{what} must decode to at least {MIN_KEY_BYTES} bytes, got {len(raw)}; "
            "create one with `enrich keys init`"
        )
    return raw


def encode_secret(secret: bytes) -> str:
    """URL-safe base64 text form of a secret, as stored in the keyring and accepted from env."""
    return base64.urlsafe_b64encode(secret).decode("ascii")


@dataclass(frozen=True)
class Key:
    """One secret key and its id."""

    secret: bytes = field(repr=False)
    key_id: str

    @classmethod
    def from_secret(cls, secret: bytes) -> Key:
        """Wrap a secret, deriving its id."""
        return cls(secret=secret, key_id=key_id_for(secret))


class Pseudonymiser:
    """Turns normalised identifiers into keyed pseudonyms: HMAC-SHA256(key, kind ":" value).

    The digest is hex; `key_id` names the key and is stored beside every digest, so keys
    can rotate without silently breaking joins.
    """

    def __init__(self, key: Key) -> None:
        self._secret = key.secret
        self.key_id = key.key_id

    def digest(self, kind: IdentifierKind, value: str) -> str:
        """Pseudonym of one normalised value."""
        return hmac.digest(self._secret, f"{kind}:{value}".encode(), "sha256").hex()

    def digest_many(self, kind: IdentifierKind, values: Iterable[str]) -> list[str]:
        """Pseudonyms of many normalised values, in order (the same as `digest` of each)."""
        # the key and the "kind:" prefix are absorbed once; each value continues a copy
        base = hmac.new(self._secret, f"{kind}:".encode(), "sha256")

        def one(value: str) -> str:
            mac = base.copy()
            mac.update(value.encode())
            return mac.hexdigest()

        return list(map(one, values))


def check_key_folder(path: Path) -> None:
    """Raise KeyMaterialError if the folder of key file `path` is writable by everyone.

    Anyone could then delete the key file (the only copy of the pseudonym key orphans every
    pseudonym made with it) or, without the sticky bit, replace it with keys of their own or
    a link to another key file, and a shared sticky folder such as /tmp is cleaned up behind
    the owner's back. A group-writable folder is accepted: with user-private groups (umask
    002) the group is the owner alone.
    """
    folder = path.parent
    mode = folder.stat().st_mode & 0o7777
    if mode & stat.S_IWOTH:
        raise KeyMaterialError(
            f"key file {path} is in a folder anyone may write to ({folder}, mode {mode:04o}); "
            f"refusing to use it: anyone could delete or replace the keys. Move the file to a "
            f"private folder (`chmod 700`, ENRICH_KEY_FILE) or `chmod o-w {folder}`"
        )


@dataclass
class Keyring:
    """The local key file written by `enrich keys init`: active and retired keys per purpose.

    Retired keys stay in the file so data made with them can still be matched or opened.
    """

    keys: dict[str, dict[str, dict[str, str | None]]] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """Read a keyring file; raise KeyMaterialError if it is unreadable, malformed, open
        to anyone but its owner (the keys would no longer be secret), or in a folder anyone
        may write to (`check_key_folder`)."""
        try:
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                what = "readable" if mode & 0o044 else "writable"
                raise KeyMaterialError(
                    f"key file {path} is {what} by others (mode {mode:04o}); refusing to use "
                    f"it: `chmod 600 {path}`, and rotate the keys if others may have read them"
                )
            check_key_folder(path)
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(keys=data["keys"], active=data["active"])
        except FileNotFoundError:
            raise KeyMaterialError(
                f"key file {path} does not exist; create it with `enrich keys init`"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyMaterialError(
                f"key file {path} is unreadable ({type(exc).__name__})"
            ) from None

    def save(self, path: Path) -> None:
        """Write the keyring with mode 0600, atomically and durably; a missing folder is
        created 0700. Refused in a folder anyone may write to (`check_key_folder`)."""
        private_folder(path.parent)
        check_key_folder(path)
        # a fresh name (O_EXCL, mode 0600): a file or link planted under a fixed temporary
        # name would otherwise receive the keys
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"version": 1, "active": self.active, "keys": self.keys}, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())  # losing the only copy of a key orphans its pseudonyms
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def add(self, purpose: KeyPurpose, secret: bytes | None = None) -> Key:
        """Create a new key for `purpose`, make it active and retire the previous one."""
        key = Key.from_secret(secret if secret is not None else secrets.token_bytes(MIN_KEY_BYTES))
        now = datetime.now(UTC).isoformat(timespec="seconds")
        entries = self.keys.setdefault(purpose, {})
        previous = self.active.get(purpose)
        if previous is not None:
            entries[previous]["retired"] = now
        entries[key.key_id] = {"secret": encode_secret(key.secret), "created": now, "retired": None}
        self.active[purpose] = key.key_id
        return key

    def active_key(self, purpose: KeyPurpose) -> Key:
        """The active key for `purpose`."""
        key_id = self.active.get(purpose)
        if key_id is None:
            raise KeyMaterialError(f"key file has no active {purpose} key; run `enrich keys init`")
        return self.get(purpose, key_id)

    def get(self, purpose: KeyPurpose, key_id: str) -> Key:
        """A key (active or retired) by id."""
        try:
            encoded = self.keys[purpose][key_id]["secret"]
        except KeyError:
            raise KeyMaterialError(f"key file has no {purpose} key {key_id}") from None
        if encoded is None:
            raise KeyMaterialError(f"{purpose} key {key_id} has no secret")
        return Key.from_secret(decode_secret(encoded, what=f"{purpose} key {key_id}"))
