"""Test-time TLS material for the fake KMS servers.

make_ca(directory) creates a throwaway CA and a server certificate for
127.0.0.1 / localhost with the openssl command-line tool, and returns the
paths.  Nothing is reused between runs; everything lives in the caller's
scratch directory.
"""
import os
import subprocess


def _run(args, cwd):
    subprocess.run(["openssl"] + args, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   timeout=60)


def make_ca(directory):
    """Return {'ca': ca.pem, 'cert': server.pem, 'key': server.key}."""
    d = directory
    _run(["req", "-x509", "-newkey", "ec", "-pkeyopt",
          "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
          "-subj", "/CN=keycache test CA", "-keyout", "ca.key",
          "-out", "ca.pem",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
    _run(["req", "-newkey", "ec", "-pkeyopt",
          "ec_paramgen_curve:prime256v1", "-nodes",
          "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
          "-out", "server.csr"], d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n")
    _run(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem",
          "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
          "-extfile", "server.ext", "-out", "server.pem"], d)
    return {"ca": os.path.join(d, "ca.pem"),
            "cert": os.path.join(d, "server.pem"),
            "key": os.path.join(d, "server.key")}
