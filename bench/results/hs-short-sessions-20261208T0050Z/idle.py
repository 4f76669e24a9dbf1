import socket
import sys
import time

port, k = int(sys.argv[1]), int(sys.argv[2])
conns = []
for i in range(k):
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"a LOGIN user%04d benchpw\r\n" % (i % 2000 + 1))
    while not f.readline().startswith(b"a "):
        pass
    conns.append((s, f))
time.sleep(3)
print("held", len(conns), flush=True)
# the caller measures now; wait for its signal on stdin
sys.stdin.readline()
for s, f in conns:
    s.sendall(b"z NOOP\r\n")
    assert f.readline().startswith(b"z OK"), "session dead"
    s.close()
print("all alive")
