# A socket made inside a named network namespace (/var/run/netns/NAME), usable from this
# process: setns(2) moves only the calling thread and a socket stays in the namespace it
# was made in, so a short-lived thread enters the namespace and makes the socket. Used by
# the netlink firewall route and by the lab.
from __future__ import annotations

import ctypes
import os
import socket
import threading

CLONE_NEWNET = 0x40000000


def socket_in(netns: str, family: int, type_: int, proto: int = 0) -> socket.socket:
    """The socket, or the OSError (or other exception) making it raised."""
    result: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/var/run/netns/{netns}", "rb") as fh:
                rc = libc.setns(fh.fileno(), CLONE_NEWNET)
            if rc != 0:
                err = ctypes.get_errno()
                result.append(OSError(err, os.strerror(err)))
                return
            result.append(socket.socket(family, type_, proto))
        except BaseException as exc:  # handed back to the caller's thread
            result.append(exc)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    got = result[0]
    if isinstance(got, BaseException):
        raise got
    return got
