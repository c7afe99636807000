"""Signed verdicts: a verdict note counts only when an SSH signature by a key the user trusts
covers it (`ssh-keygen -Y sign/verify`, as git signs commits with gpg.format=ssh).

A note is the verdict's text followed by an armored SSH signature. What is signed binds the
verdict to exactly what it is about: the check's name, the object the note is attached to
(commit or tree) and the text, so a note copied to another commit, tree or check, or edited,
does not verify.

Trusted keys: the user's own, made on first need in the config dir; and the keys of git's own
`gpg.ssh.allowedSignersFile` (a team's). Verifications that succeeded are remembered in a
private file of the user's state dir, keyed by the note's bytes, where it is attached and a
hash of the trusted keys, so checking notes already checked runs no ssh-keygen.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from .config import APP_NAME
from .errors import GpuspaceError

NAMESPACE = "git-gpuspace-verdict"  # ssh-keygen -n: a verdict's signature is never a commit's or a file's
OWN_PRINCIPAL = "git-gpuspace-own-key"
BEGIN = "-----BEGIN SSH SIGNATURE-----\n"
END = "-----END SSH SIGNATURE-----\n"
CACHE_LIMIT = 200_000  # remembered verifications (65 bytes each) before the oldest half is dropped
SSH_KEYGEN_TIMEOUT_S = 30


def key_dir() -> Path:
    return platformdirs.user_config_path(APP_NAME) / "verdict-key"


def own_key() -> Path:
    return key_dir() / "id_ed25519"


def cache_path() -> Path:
    # the state dir, not the cache dir: the cache dir's `shared` folder is mounted into containers
    return platformdirs.user_state_path(APP_NAME) / "verified-verdicts"


def message(check: str, target: str, body: str) -> bytes:
    """What a verdict's signature covers."""
    return f"git-gpuspace verdict\ncheck: {check}\nobject: {target}\n\n{body}".encode()


def split(note: bytes) -> tuple[str, str | None]:
    """A note's verdict text and its armored signature (None: unsigned, or not only a signature
    after the text)."""
    text = note.decode(errors="replace")
    start = text.rfind("\n" + BEGIN)
    if start == -1 or not text.endswith(END):
        return text, None
    signature = text[start + 1:]
    if signature.count(END) != 1:
        return text, None
    return text[:start + 1], signature


# --------------------------------------------------------------------------- the user's key


def ensure_key() -> Path:
    """The user's own signing key, made on first need (ed25519, no passphrase: verdicts are
    signed by background dispatchers too); dir 0700, key 0600."""
    key = own_key()
    if key.exists() and key.with_suffix(".pub").exists():
        return key
    import tempfile

    parent = key_dir().parent
    parent.mkdir(parents=True, exist_ok=True)
    made = Path(tempfile.mkdtemp(prefix=".verdict-key.", dir=parent))  # 0700
    try:
        _ssh_keygen(["-q", "-t", "ed25519", "-N", "", "-C", f"git-gpuspace verdicts {_who()}",
                     "-f", str(made / key.name)], what="make your verdict signing key")
        os.chmod(made / key.name, 0o600)
        try:
            os.rename(made, key_dir())  # whole: no one ever reads a key without its .pub
        except OSError:
            if not key.exists():  # not a race lost to another command making it: a real failure
                raise GpuspaceError(f"cannot create {key_dir()}", hint="check that directory's permissions") from None
    finally:
        if made.exists():
            import shutil

            shutil.rmtree(made, ignore_errors=True)
    return key


def own_public_key() -> str | None:
    """`<type> <base64>` of the user's own key, or None before it exists."""
    try:
        fields = (own_key().with_suffix(".pub")).read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise GpuspaceError(f"cannot read {own_key()}.pub: {error}", hint="remove the folder "
                            f"{key_dir()} to make a new key (your earlier verdicts are then checked again)") from None
    return " ".join(fields[:2]) if len(fields) >= 2 else None


def _who() -> str:
    import getpass
    import socket

    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return socket.gethostname()


# --------------------------------------------------------------------------- signing


def sign(check: str, target: str, body: str, trust: Trust | None = None) -> bytes:
    """The note for `target` (commit or tree id): the verdict text and its signature by the
    user's key. Remembered as verified, so it is never checked again."""
    key = ensure_key()
    if not body.endswith("\n"):
        body += "\n"  # the signature starts a line of its own (what split reads)
    signature = _ssh_keygen(["-Y", "sign", "-f", str(key), "-n", NAMESPACE], stdin=message(check, target, body),
                            what="sign the verdict")
    note = (body + signature).encode()
    if trust is not None:
        VerifiedCache().add([trust.cache_key(check, target, note)])
    return note


# --------------------------------------------------------------------------- trust


@dataclass(frozen=True)
class Trust:
    """The keys the user trusts: their own, and git's gpg.ssh.allowedSignersFile."""

    own: str | None  # `<type> <base64>`
    allowed_signers: Path | None
    digest: str  # of both: remembered verifications hold only for the same keys

    @classmethod
    def load(cls, info) -> Trust:
        own = own_public_key()
        allowed, content = _allowed_signers(info)
        digest = hashlib.sha256(b"\0".join([b"v1", NAMESPACE.encode(), (own or "").encode(),
                                            str(allowed or "").encode(), content])).hexdigest()
        return cls(own, allowed, digest)

    def cache_key(self, check: str, target: str, note: bytes) -> str:
        return hashlib.sha256(b"\0".join([self.digest.encode(), check.encode(), target.encode(), note])).hexdigest()


def _allowed_signers(info) -> tuple[Path | None, bytes]:
    """git's gpg.ssh.allowedSignersFile, read as git reads it (`~` expanded; relative to the
    worktree git runs in), and its content."""
    found = info.git("config", "--type=path", "--get", "gpg.ssh.allowedSignersFile")
    value = found.stdout.strip() if found.returncode == 0 else ""
    if not value:
        return None, b""
    path = Path(value)
    if not path.is_absolute():
        top = info.git("rev-parse", "--show-toplevel").stdout.strip()
        path = Path(top or info.cwd or Path.cwd()) / path
    return path, _read_regular(path)


def _read_regular(path: Path) -> bytes:
    """A regular file's bytes; never blocks on a FIFO or device put at that path."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise GpuspaceError(f"gpg.ssh.allowedSignersFile {path} is not a regular file",
                                    hint="point `git config gpg.ssh.allowedSignersFile` at a file of "
                                    "`<principal> <key-type> <key>` lines")
            with os.fdopen(fd, "rb", closefd=False) as handle:
                return handle.read(16 << 20)
        finally:
            os.close(fd)
    except OSError as error:
        raise GpuspaceError(f"cannot read gpg.ssh.allowedSignersFile {path}: {error.strerror}",
                            hint="create it, or fix or unset `git config gpg.ssh.allowedSignersFile`") from None


# --------------------------------------------------------------------------- verifying


class Verifier:
    """Which notes count. A note counts only when its signature, by a trusted key, covers this
    check, this object and its text; ssh-keygen is asked once per note, never again."""

    def __init__(self, info) -> None:
        self.info = info
        self._trust: Trust | None = None
        self._cache: VerifiedCache | None = None
        self._scratch: Path | None = None  # a private dir for ssh-keygen's files
        self._verified: list[str] = []

    @property
    def trust(self) -> Trust:
        if self._trust is None:
            self._trust = Trust.load(self.info)
        return self._trust

    def check(self, check: str, target: str, note: bytes) -> tuple[str, str | None]:
        """(the verdict text, None) when the note counts, else (its text, why it does not)."""
        body, signature = split(note)
        if signature is None:
            return body, "not signed by a key you trust (unsigned)"
        key = self.trust.cache_key(check, target, note)
        if self._cache is None:
            self._cache = VerifiedCache()
        if key in self._cache:
            return body, None
        why = self._verify(check, target, body, signature)
        if why is None:
            self._verified.append(key)
        return body, why

    def close(self) -> None:
        if self._verified and self._cache is not None:
            self._cache.add(self._verified)
        if self._scratch is not None:
            import shutil

            shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _verify(self, check: str, target: str, body: str, signature: str) -> str | None:
        signer = _signer(signature)
        if signer is None:
            return "not signed by a key you trust (a malformed signature)"
        signed = message(check, target, body)
        mismatch = "its signature is not for this object, check and text (copied or edited)"
        scratch = self._dir()
        (scratch / "signature").write_text(signature)
        if self.trust.own is not None and _key_blob(self.trust.own) == signer.key:
            own = scratch / "own-signers"
            own.write_text(f'{OWN_PRINCIPAL} namespaces="{NAMESPACE}" {self.trust.own}\n')
            return None if self._ask(own, OWN_PRINCIPAL, signed) else mismatch
        if self.trust.allowed_signers is not None:
            found = _ssh_keygen(["-Y", "find-principals", "-s", str(scratch / "signature"), "-f",
                                 str(self.trust.allowed_signers)], what="check a verdict's signature", check=False)
            principal = found.splitlines()[0].strip() if found and found.strip() else ""  # git takes the first
            if principal:
                return None if self._ask(self.trust.allowed_signers, principal, signed) else mismatch
        return f"not signed by a key you trust (signed by {signer.describe()})"

    def _ask(self, signers: Path, principal: str, signed: bytes) -> bool:
        return _ssh_keygen(["-Y", "verify", "-f", str(signers), "-I", principal, "-n", NAMESPACE, "-s",
                            str(self._dir() / "signature")], stdin=signed, what="check a verdict's signature",
                           check=False) is not None

    def _dir(self) -> Path:
        if self._scratch is None:
            import tempfile

            self._scratch = Path(tempfile.mkdtemp(prefix="git-gpuspace-verdicts."))  # 0700
        return self._scratch


@dataclass(frozen=True)
class Signer:
    key: bytes  # the public key blob in the signature

    def describe(self) -> str:
        fingerprint = base64.b64encode(hashlib.sha256(self.key).digest()).decode().rstrip("=")
        kind = _string(self.key, 0)[0].decode(errors="replace") if len(self.key) > 4 else "?"
        return f"{kind} key SHA256:{fingerprint}"


def _signer(armored: str) -> Signer | None:
    """The public key inside an SSHSIG signature (PROTOCOL.sshsig); None when malformed."""
    try:
        blob = base64.b64decode("".join(armored.splitlines()[1:-1]), validate=True)
        if not blob.startswith(b"SSHSIG") or len(blob) < 10:
            return None
        return Signer(_string(blob, 10)[0])
    except (ValueError, IndexError):
        return None


def _string(blob: bytes, at: int) -> tuple[bytes, int]:
    size = int.from_bytes(blob[at:at + 4], "big")
    if len(blob) < at + 4 or at + 4 + size > len(blob):
        raise ValueError("truncated")
    return blob[at + 4:at + 4 + size], at + 4 + size


def _key_blob(public_key: str) -> bytes | None:
    try:
        return base64.b64decode(public_key.split()[1], validate=True)
    except (ValueError, IndexError):
        return None


def _ssh_keygen(args: list[str], what: str, stdin: bytes | None = None, check: bool = True):
    """ssh-keygen's stdout (text); None on failure when not `check`."""
    try:
        feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
        done = subprocess.run(["ssh-keygen", *args], capture_output=True, timeout=SSH_KEYGEN_TIMEOUT_S, **feed)
    except FileNotFoundError:
        raise GpuspaceError(f"ssh-keygen not found: it is needed to {what} (verdict notes are signed)",
                            hint="install OpenSSH's client (Debian/Ubuntu: apt-get install openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise GpuspaceError(f"ssh-keygen did not {what} within {SSH_KEYGEN_TIMEOUT_S} s") from None
    if done.returncode != 0:
        if not check:
            return None
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise GpuspaceError(f"ssh-keygen could not {what}: {said[-1] if said else f'exit {done.returncode}'}")
    return done.stdout.decode(errors="replace")


# --------------------------------------------------------------------------- the memo


class VerifiedCache:
    """Verifications that succeeded, one sha256 a line, in a private file (0600) of the user's
    state dir. An entry names the note's bytes, its object, its check and the trusted keys: any
    other note, place or key set is a miss."""

    def __init__(self) -> None:
        self._known: set[str] | None = None

    def __contains__(self, key: str) -> bool:
        if self._known is None:
            self._known = set(self._read())
        return key in self._known

    def add(self, keys: list[str]) -> None:
        path = cache_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "a") as handle:
                handle.write("".join(f"{key}\n" for key in keys))
            if path.stat().st_size > CACHE_LIMIT * 65:
                self._trim(path)
        except OSError:
            pass  # only a memo: the next command verifies again
        if self._known is not None:
            self._known.update(keys)

    def _read(self) -> list[str]:
        try:
            fd = os.open(cache_path(), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return []
        with os.fdopen(fd, "r", errors="replace") as handle:
            import stat

            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
                return []  # not a file only this user can write: trust nothing in it
            return handle.read().split()

    @staticmethod
    def _trim(path: Path) -> None:
        from .atomic import replace_file

        kept = path.read_text(errors="replace").split()[-CACHE_LIMIT // 2:]
        replace_file(path, "".join(f"{key}\n" for key in kept).encode())
