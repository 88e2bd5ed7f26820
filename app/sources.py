"""Where data may come from: local paths inside the data roots, and allowed remote URLs.

Local paths are resolved with symlinks followed and must stay inside the roots.
URLs pass an allow-list of protocols (``REMOTE_PROTOCOLS``); protocols that would
reach the server's own disk or wrap another filesystem are always refused, and a
URL whose host resolves to a loopback, private, link-local or reserved address is
refused unless ``REMOTE_ALLOW_PRIVATE`` is set, so a dataset registration cannot be
used to make the server fetch from its own network (server-side request forgery).
"""
from __future__ import annotations

import errno
import glob
import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

import fsspec

from .errors import Forbidden, InvalidRequest, NotFound, Unprocessable, shorten

GLOB = re.compile(r"[*?\[]")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)(?:://|::)")  # "proto::" starts a chained URL
# Protocols that read the server's own disk or wrap another filesystem would bypass the roots.
_REFUSED_PROTOCOLS = {"file", "local", "zip", "tar", "libarchive", "dir", "reference",
                      "simplecache", "filecache", "blockcache", "cached"}
MAX_SOURCE_CHARS = 4096  # PATH_MAX on Linux; a longer source was an ENAMETOOLONG 500


def check_length(source: str) -> None:
    """InvalidRequest for a source longer than ``MAX_SOURCE_CHARS``."""
    if isinstance(source, str) and len(source) > MAX_SOURCE_CHARS:
        raise InvalidRequest(f"'source' is {len(source)} characters long; at most {MAX_SOURCE_CHARS} are accepted",
                             {"field": "source", "limit": MAX_SOURCE_CHARS})


def resolve_local(path: str, roots: Sequence[Path], excluded: Sequence[Path] = ()) -> Path:
    """Real path of ``path`` (symlinks followed); Forbidden unless inside one of ``roots``
    and outside every ``excluded`` folder (nor a folder holding one).

    Relative paths are taken from the first root. For a glob the non-glob base and
    every match are checked, and the returned path keeps the pattern; for a directory
    every symlink beneath it is checked too.
    """
    if not isinstance(path, str) or not path.strip():
        raise InvalidRequest("path must be a non-empty string")
    check_length(path)
    try:
        return _resolve_local(path, roots, excluded)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # one name over NAME_MAX (255) in a shorter path
            raise InvalidRequest(f"a name in path {shorten(repr(path))} is longer than the file system "
                                 "allows", {"field": "source"}) from None
        raise Unprocessable(f"cannot look at path {shorten(repr(path))}: {exc.strerror}",
                            {"path": shorten(path)}) from None


def _resolve_local(path: str, roots: Sequence[Path], excluded: Sequence[Path]) -> Path:
    if "\x00" in path:
        raise InvalidRequest("path must not contain NUL bytes")
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    if not real_roots:
        raise Forbidden("no data roots are configured, so local paths are not allowed")
    real_excluded = [Path(os.path.realpath(e)) for e in excluded]
    raw = Path(path) if os.path.isabs(path) else real_roots[0] / path
    if not GLOB.search(str(raw)):
        real = Path(os.path.realpath(raw))
        _require_inside(real, path, real_roots)
        _require_outside(real, path, real_excluded)
        if not real.exists():
            raise NotFound(f"path {shorten(repr(path))} does not exist", {"path": shorten(path)})
        if real.is_dir():
            _check_tree(real, path, real_roots)
        return real
    base, rest = _split_glob(raw)
    if ".." in rest.parts:
        raise Forbidden(f"'..' is not allowed after a wildcard in {shorten(repr(path))}", {"path": shorten(path)})
    real_base = Path(os.path.realpath(base))
    _require_inside(real_base, path, real_roots)
    pattern = real_base / rest
    for match in glob.glob(str(pattern), recursive=True):
        real = Path(os.path.realpath(match))
        _require_inside(real, path, real_roots)
        _require_outside(real, path, real_excluded)
        if real.is_dir():
            _check_tree(real, path, real_roots)
    return pattern


def _require_inside(real: Path, path: str, roots: list[Path]) -> None:
    if not any(real == root or real.is_relative_to(root) for root in roots):
        shown = ", ".join(str(r) for r in roots)
        raise Forbidden(f"path {shorten(repr(path))} is outside the allowed data roots: {shown}",
                        {"path": shorten(path), "roots": [str(r) for r in roots]})


def _require_outside(real: Path, path: str, excluded: list[Path]) -> None:
    """Forbidden when ``real`` is inside an excluded folder, or is a folder that holds one."""
    for folder in excluded:
        if real == folder or real.is_relative_to(folder) or folder.is_relative_to(real):
            raise Forbidden(f"path {shorten(repr(path))} reaches into the service's own managed data "
                            f"({folder}), which cannot be registered as a source: use the datasets the "
                            "service registered for it, or register your own files", {"path": shorten(path)})


def _check_tree(directory: Path, path: str, roots: list[Path]) -> None:
    """Refuse a directory holding a symlink (file or folder) that leads outside the roots."""
    for parent, dirs, files in os.walk(directory):
        for name in dirs + files:
            entry = os.path.join(parent, name)
            if os.path.islink(entry):
                _require_inside(Path(os.path.realpath(entry)), path, roots)


def _split_glob(path: Path) -> tuple[Path, Path]:
    parts = path.parts
    first = next(i for i, part in enumerate(parts) if GLOB.search(part))
    return Path(*parts[:first]), Path(*parts[first:])


def is_url(source: str) -> bool:
    """True when ``source`` looks like an fsspec URL (``s3://``, ``https://``, ``gs://``…)."""
    return isinstance(source, str) and bool(_URL.match(source))


@dataclass(frozen=True)
class RemotePolicy:
    """Which URLs may be registered: ``protocols`` (empty: none) and whether hosts may be private."""

    protocols: tuple[str, ...] = ()
    allow_private: bool = False


# Protocols that name a host the server would connect to; their host must resolve to public addresses.
_HOST_PROTOCOLS = {"http", "https", "ftp", "sftp", "ssh", "webdav", "smb"}


def check_url(url: str, policy: RemotePolicy | None = None) -> str:
    """Return ``url`` if ``policy`` allows its protocol and host and fsspec can read it.

    Forbidden for a protocol not in the allow-list (or any remote source when it is
    empty), for protocols that would reach the server's own disk, and for a host that
    resolves to a loopback, private, link-local or reserved address (server-side
    request forgery) unless the policy allows private hosts. ``policy=None`` only
    checks that the URL is well formed and has a backend (used by tests and tools).
    """
    match = _URL.match(url)
    if not match:
        raise InvalidRequest(f"{shorten(repr(url))} is not a URL")
    protocol = match.group(1).lower()
    if "::" in url or protocol in _REFUSED_PROTOCOLS:  # fsspec reads "::" as a chain of filesystems
        raise Forbidden(f"{protocol}:// URLs are not allowed; give a local path inside the "
                        "data roots or a remote URL such as s3://", {"protocol": protocol})
    if policy is not None:
        check_remote(url, protocol, policy)
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise InvalidRequest(f"the {protocol}:// protocol needs a backend that is not installed: "
                             f"{exc}", {"protocol": protocol}) from None
    except ValueError:
        raise InvalidRequest(f"unknown URL protocol {protocol!r}", {"protocol": protocol}) from None
    return url


def check_remote(url: str, protocol: str, policy: RemotePolicy) -> None:
    """Forbidden unless ``policy`` allows ``protocol`` and, for a protocol naming a host, the host
    resolves to public addresses only (or the policy allows private hosts). Resolves the host:
    blocking."""
    if not policy.protocols:
        raise Forbidden("remote sources are disabled on this server (REMOTE_PROTOCOLS is empty); "
                        "give a local path inside the data roots", {"protocol": protocol})
    if protocol not in policy.protocols:
        raise Forbidden(f"{protocol}:// is not an allowed remote protocol; allowed: "
                        f"{', '.join(policy.protocols)} (REMOTE_PROTOCOLS)",
                        {"protocol": protocol, "allowed": list(policy.protocols)})
    if protocol in _HOST_PROTOCOLS and not policy.allow_private:
        _require_public_host(url, protocol)


def _require_public_host(url: str, protocol: str) -> None:
    """Forbidden unless every address the URL's host resolves to is a global one."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise InvalidRequest(f"malformed URL {shorten(repr(url))}: {exc}") from None
    if not host:
        raise InvalidRequest(f"URL {shorten(repr(url))} has no host", {"protocol": protocol})
    try:
        infos = socket.getaddrinfo(host, port or 0, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unprocessable(f"cannot resolve host {host!r}: {exc}", {"host": host}) from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            raise Forbidden(f"host {host!r} resolves to {address}, which is not a public address; "
                            "set REMOTE_ALLOW_PRIVATE=1 to allow private hosts",
                            {"host": host, "address": str(address)})


def resolve_source(source: str, roots: Sequence[Path], remote: RemotePolicy | None = None,
                   excluded: Sequence[Path] = ()) -> str:
    """A URL allowed by ``remote`` (none by default), or the real local path inside ``roots``
    and outside ``excluded``."""
    check_length(source)
    if is_url(source):
        return check_url(source, remote or RemotePolicy())
    return str(resolve_local(source, roots, excluded))
