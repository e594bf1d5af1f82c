#!/usr/bin/python3
"""Write the seed corpora of the frame and request fuzz targets.

Seeds are requests built here from proto/PROTOCOL.md with python3-msgpack
(our own inputs, nothing copied).  Run from the repository root:
    /usr/bin/python3 tests/fuzz/make_wire_seeds.py
"""
import os
import struct

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))


def frame(body):
    return struct.pack(">I", len(body)) + body


def requests():
    esdk = os.path.join(HERE, "corpus", "esdk_reader")
    ct = b""
    for name in sorted(os.listdir(esdk)):
        with open(os.path.join(esdk, name), "rb") as f:
            ct = f.read()
            break
    ctx = {"table": "users", "column": "email"}
    return {
        "hello": {"id": 1, "op": "hello", "versions": [1]},
        "hello-bad": {"id": 2, "op": "hello", "versions": [9, 7]},
        "ping": {"id": 3, "op": "ping"},
        "stats": {"id": 4, "op": "stats"},
        "encrypt": {"id": 5, "op": "encrypt", "key": "users-email",
                    "plaintext": b"alice@example.com", "context": ctx},
        "encrypt-signed": {"id": 6, "op": "encrypt", "key": "signed",
                           "plaintext": b"x" * 40},
        "decrypt": {"id": 7, "op": "decrypt", "ciphertext": ct,
                    "context": {"table": "users"}},
        "batch": {"id": 8, "op": "batch", "items": [
            {"op": "encrypt", "key": "users-email", "plaintext": b"a"},
            {"op": "decrypt", "ciphertext": ct},
            {"op": "ping"}]},
        "unknown-op": {"id": 9, "op": "frobnicate"},
    }


def main():
    reqs = requests()
    for target in ("frame", "request"):
        os.makedirs(os.path.join(HERE, "corpus", target), exist_ok=True)
    stream = b""
    for name, req in reqs.items():
        body = msgpack.packb(req, use_bin_type=True)
        with open(os.path.join(HERE, "corpus", "request", name), "wb") as f:
            f.write(body)
        stream += frame(body)
        with open(os.path.join(HERE, "corpus", "frame", name), "wb") as f:
            f.write(frame(body))
    with open(os.path.join(HERE, "corpus", "frame", "pipelined"), "wb") as f:
        f.write(stream)


if __name__ == "__main__":
    main()
