"""A real redis-server for a test, on a free loopback port, without persistence: started,
polled until it answers PING (with a deadline), stopped (SIGKILL) and started again on the same
port. For the tests of `pybox serve --store redis://...`."""
import socket
import subprocess
import time

from conftest import SLOW


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self, tmp, password=None):
        self.port = free_port()
        self.tmp = tmp
        self.password = password
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)]
            + (["--requirepass", self.password] if self.password else []),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20 * SLOW
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                    auth = f"AUTH {self.password}\r\n".encode() if self.password else b""
                    c.sendall(auth + b"PING\r\n")
                    reply = b""
                    while reply.count(b"\r\n") < (2 if auth else 1) and len(reply) < 256:
                        chunk = c.recv(64)
                        if not chunk:
                            break
                        reply += chunk
                    if b"+PONG" in reply:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited at start")
            time.sleep(0.05)
        self.stop()  # never left running by a start that failed
        raise AssertionError("redis-server did not answer PING within 20 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def uri(self):
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"
