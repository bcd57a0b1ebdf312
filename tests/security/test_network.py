"""No network: no socket from a cell reaches anything, the host's loopback included."""
import json
import socket

import pytest

from conftest import token

ATTACK = r"""
import ctypes, errno, json, socket, sys
cfg = json.loads(sys.stdin.read())
host, tcp, udp, abstract = "127.0.0.1", cfg["tcp"], cfg["udp"], cfg["abstract"]
def report(what, fn):
    try:
        r = fn()
        print("SUCCESS", what, r, flush=True)
    except OSError as e:
        print("DENIED", what, type(e).__name__, errno.errorcode.get(e.errno, e.errno), flush=True)

report("tcp", lambda: socket.create_connection((host, tcp), timeout=2))
def udp_send():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return s.sendto(b"PING-FROM-CELL", (host, udp))
report("udp", udp_send)
def tcp6():
    return socket.create_connection(("::1", tcp), timeout=2)
report("tcp6", tcp6)
def unix_abstract():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0" + abstract)
    return s.send(b"PING")
report("unix-abstract", unix_abstract)

# The same through raw syscalls, in case the library is what refuses.
libc = ctypes.CDLL(None, use_errno=True)
SYS_socket, SYS_connect, SYS_sendto = 41, 42, 44
class sockaddr_in(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16),
                ("addr", ctypes.c_uint32), ("zero", ctypes.c_char * 8)]
def addr(port):
    return sockaddr_in(socket.AF_INET, socket.htons(port),
                       int.from_bytes(socket.inet_aton(host), "little"), b"")
def raw(what, family, kind, proto=0):
    fd = libc.syscall(SYS_socket, family, kind, proto)
    if fd < 0:
        print("DENIED", what, "raw", errno.errorcode.get(ctypes.get_errno()), flush=True)
        return None
    print("SUCCESS", what, "socket fd", fd, flush=True)
    return fd
fd = raw("raw-tcp", socket.AF_INET, socket.SOCK_STREAM)
if fd is not None:
    a = addr(tcp)
    r = libc.syscall(SYS_connect, fd, ctypes.byref(a), ctypes.sizeof(a))
    print("SUCCESS" if r == 0 else "DENIED", "raw-connect", r, ctypes.get_errno(), flush=True)
fd = raw("raw-udp", socket.AF_INET, socket.SOCK_DGRAM)
if fd is not None:
    a = addr(udp)
    r = libc.syscall(SYS_sendto, fd, b"RAW-PING", 8, 0, ctypes.byref(a), ctypes.sizeof(a))
    print("SUCCESS" if r >= 0 else "DENIED", "raw-sendto", r, ctypes.get_errno(), flush=True)
raw("raw-packet", 17, socket.SOCK_RAW, 0x0300)       # AF_PACKET, ETH_P_ALL
raw("raw-netlink", 16, socket.SOCK_RAW, 0)           # AF_NETLINK
raw("raw-icmp", socket.AF_INET, socket.SOCK_RAW, 1)
raw("raw-inet6", socket.AF_INET6, socket.SOCK_DGRAM)
raw("raw-vsock", 40, socket.SOCK_STREAM)             # AF_VSOCK
"""


@pytest.fixture
def listeners():
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    abstract_name = "pybox-sec-" + token()
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0" + abstract_name)
    unix.listen(16)
    try:
        yield tcp, udp, unix, abstract_name
    finally:
        for s in (tcp, udp, unix):
            s.close()


def _nothing_arrived(tcp, udp, unix):
    for s in (tcp, unix):
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            conn, peer = s.accept()
            conn.close()
            pytest.fail(f"the listener got a connection from {peer!r}")
    udp.settimeout(0.5)
    with pytest.raises(socket.timeout):
        data, peer = udp.recvfrom(4096)
        pytest.fail(f"the UDP listener got {data!r} from {peer!r}")


def test_no_tcp_udp_or_unix_to_host(pybox, listeners):
    """Invariant: TCP and UDP to a listener on the host's 127.0.0.1 (and to an abstract unix
    socket of the host), through the socket module and raw syscalls, all fail with a
    permission error, and the listeners receive nothing."""
    tcp, udp, unix, abstract_name = listeners
    cfg = {"tcp": tcp.getsockname()[1], "udp": udp.getsockname()[1], "abstract": abstract_name}
    res = pybox(ATTACK, "--timeout", "20", "--stdin", "-", allow_all=True,
                stdin=json.dumps(cfg).encode())
    assert res.data is not None, res
    out = res.data["stdout"]
    assert "SUCCESS" not in out, res
    for what in ("tcp", "udp", "tcp6", "unix-abstract"):
        assert f"DENIED {what} PermissionError" in out, (what, res)
    for what in ("raw-tcp", "raw-udp", "raw-packet", "raw-netlink", "raw-icmp", "raw-inet6",
                 "raw-vsock"):
        assert f"DENIED {what} raw EPERM" in out, (what, res)
    _nothing_arrived(tcp, udp, unix)


def test_no_network_even_for_preexisting_sockets(pybox, listeners):
    """Invariant: the cell inherits no socket of pybox or of the test: no fd above 2 (other
    than its own) is a socket it could use to talk to the host."""
    tcp, udp, unix, _ = listeners
    code = r"""
import os, stat, socket
found = []
for fd in range(3, 1024):
    try:
        st = os.fstat(fd)
    except OSError:
        continue
    kind = "socket" if stat.S_ISSOCK(st.st_mode) else oct(st.st_mode)
    found.append((fd, kind))
    if stat.S_ISSOCK(st.st_mode):
        try:
            s = socket.socket(fileno=fd)
            s.send(b"HELLO-FROM-CELL")
            print("SENT-ON", fd)
        except OSError as e:
            pass
print("FDS", found)
"""
    res = pybox(code, "--timeout", "10", allow_all=True)
    assert res.data is not None, res
    assert "SENT-ON" not in res.data["stdout"], res
    assert "'socket'" not in res.data["stdout"], res
    _nothing_arrived(tcp, udp, unix)
