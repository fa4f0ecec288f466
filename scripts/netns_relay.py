"""Forward TCP connections from 127.0.0.1:PORT on this host to 127.0.0.1:PORT inside a network
namespace: how Slurm's commands on the host (sbatch, squeue, scontrol, scancel) reach the
slurmctld of the Alliance-like sandbox, which runs, with slurmd and therefore every job, in a
namespace that has nothing but its own loopback device (scripts/local_slurm.sh).

    python3 netns_relay.py PORT NETNS_PATH PIDFILE

The listening socket is made in the host's namespace; then the process joins NETNS_PATH (e.g.
/proc/<slurmctld pid>/ns/net) and every connection it opens from then on is made there. A
socket belongs to the namespace it was created in, so one process bridges the two. Only
connections from the host into the namespace are possible, never the other way.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def join_namespace(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                sock.shutdown(how)


def serve(client: socket.socket, port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
        upstream.settimeout(None)
    except OSError:
        client.close()
        return
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def main(argv: list[str]) -> int:
    port, netns, pidfile = int(argv[0]), argv[1], argv[2]
    listener = socket.create_server(("127.0.0.1", port), reuse_port=False, backlog=128)
    join_namespace(netns)  # before any thread starts: threads inherit the namespace of their creator
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client, port), daemon=True).start()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print("usage: python3 netns_relay.py PORT NETNS_PATH PIDFILE", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
