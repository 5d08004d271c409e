"""Socket set-up shared by server and client: TCP options, long unix paths."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from typing import Iterator

# AF_UNIX paths are limited to 108 bytes including the NUL (Linux).  Longer paths
# are reached through the directory's /proc/self/fd entry, not with os.chdir():
# a process-wide chdir races with any other thread.
_UNIX_PATH_MAX = 107


def set_tcp_listener_options(sock: socket.socket, nodelay: bool = True) -> None:
    """Options the reference sets on its listening sockets (inherited on accept)."""
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_QUICKACK"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    # Keep-alives drop dead build hosts' connections after ~90 s instead of hours.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


@contextlib.contextmanager
def reachable_unix_path(path: str) -> Iterator[str]:
    """A path to ``path`` short enough for ``bind``/``connect``.

    Yields ``path`` itself when it fits; otherwise ``/proc/self/fd/N/<name>`` with
    ``N`` an open descriptor of the parent directory, valid inside the block.
    """
    if len(os.fsencode(path)) <= _UNIX_PATH_MAX:
        yield path
        return
    directory, name = os.path.split(os.path.abspath(path))
    dirfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        yield "/proc/self/fd/%d/%s" % (dirfd, name)
    finally:
        os.close(dirfd)


def remove_stale_unix_socket(path: str) -> None:
    """Unlink ``path`` if it is a socket nobody listens on (left by a crash)."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with reachable_unix_path(path) as reachable:
            probe.connect(reachable)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        probe.close()


def bind_unix_socket(path: str) -> socket.socket:
    """A listening-ready unix stream socket bound at ``path`` (any length)."""
    remove_stale_unix_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with reachable_unix_path(path) as reachable:
            sock.bind(reachable)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_unix_socket(path: str) -> socket.socket:
    """A connected non-blocking unix stream socket (any path length)."""
    import asyncio

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        with reachable_unix_path(path) as reachable:
            await asyncio.get_running_loop().sock_connect(sock, reachable)
    except BaseException:
        sock.close()
        raise
    return sock
