"""A fake AWS KMS (JSON protocol) for keycache tests, loopback only.

It listens on 127.0.0.1 on a random free port, over TLS with a
certificate from tlsca.make_ca, and answers TrentService.GenerateDataKey,
Encrypt and Decrypt as AWS KMS does; a Decrypt KeyId (key id, key ARN,
alias name or alias ARN) is enforced like AWS: IncorrectKeyException
when it is not the key the blob was made under.  Every request's SigV4 signature is
checked by botocore (sigv4_verify.py, Debian python3-botocore), not by
keycache's code; a bad one gets AWS's error shape.  Keys are real
AES-256-GCM keys: data keys are really wrapped and unwrapped, bound to
the EncryptionContext.

Fault injection (fake.fault(...)) for the next `count` matching requests:
  "500"       HTTP 500 KMSInternalException
  "503"       HTTP 503 ServiceUnavailableException (retry_after= header)
  "throttle"  HTTP 400 ThrottlingException
  "reset"     close the connection with a TCP reset, no answer
  "stall"     answer nothing until released or `seconds` pass, then close
  "truncate"  announce the full body, send part, close
  "badjson"   HTTP 200, JSON content type, body that is not JSON
  "ctype"     HTTP 200 with a text/html body
  "trickle"   the real answer, sent a few bytes at a time (`seconds` apart)
  "delay"     the real answer after `seconds`
  "notfound"  HTTP 400 NotFoundException
  "denied"    HTTP 400 AccessDeniedException

Run with Debian's /usr/bin/python3 (python3-botocore, python3-cryptography).
"""
import base64
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sigv4_verify import parse_authorization, verify_request  # noqa: E402,E501

ACCOUNT = "111122223333"
BLOB_MAGIC = b"FAKEKMS1"


class Fault:
    def __init__(self, mode, count=1, op=None, seconds=None,
                 retry_after=None):
        self.mode = mode
        self.count = count  # None: until cleared
        self.op = op
        self.seconds = seconds
        self.retry_after = retry_after


class FakeAwsKms:
    """One fake KMS server; start() in a background thread."""

    def __init__(self, tls, region="us-east-1", credentials=None,
                 keys=None):
        self.tls = tls
        self.region = region
        # access key id -> (secret, session token or None)
        self.credentials = credentials or {}
        self.keys = {}      # key uuid -> AES key
        self.aliases = {}   # "alias/x" -> key uuid
        for name in keys or []:
            self.add_key(name)
        self.lock = threading.Lock()
        self.calls = Counter()      # op -> requests that passed auth
        self.arrived = 0            # every request, auth or not
        self.auth_failures = Counter()
        self.incorrect_key = 0      # Decrypts refused: KeyId != blob's key
        self.decrypt_key_ids = Counter()  # Decrypt KeyId as sent (or None)
        self.faults = []
        self.contexts = []          # EncryptionContext of each op
        self.release = threading.Event()
        self.httpd = None
        self.thread = None
        self.port = None

    # ---------------------------------------------------------- set-up
    def add_key(self, alias=None):
        kid = str(uuid.uuid4())
        self.keys[kid] = AESGCM.generate_key(bit_length=256)
        if alias:
            self.aliases["alias/" + alias] = kid
        return self.arn(kid)

    def arn(self, kid):
        return "arn:aws:kms:%s:%s:key/%s" % (self.region, ACCOUNT, kid)

    def start(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.tls["cert"], self.tls["key"])
        fake = self

        class Handler(_Handler):
            kms = fake

        self.httpd = _TLSServer(("127.0.0.1", 0), Handler, ctx)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.release.set()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    @property
    def endpoint(self):
        return "https://127.0.0.1:%d" % self.port

    # ----------------------------------------------------------- control
    def fault(self, mode, count=1, op=None, seconds=None, retry_after=None):
        with self.lock:
            self.faults.append(Fault(mode, count, op, seconds, retry_after))

    def clear_faults(self):
        with self.lock:
            self.faults = []
        self.release.set()
        self.release = threading.Event()

    def total_calls(self):
        with self.lock:
            return sum(self.calls.values())

    def reset_counts(self):
        with self.lock:
            self.calls.clear()
            self.arrived = 0
            self.auth_failures.clear()
            self.incorrect_key = 0
            self.decrypt_key_ids.clear()

    def take_fault(self, op):
        with self.lock:
            for f in self.faults:
                if f.op is not None and f.op != op:
                    continue
                if f.count is not None:
                    f.count -= 1
                    if f.count <= 0:
                        self.faults.remove(f)
                return f
        return None

    # ------------------------------------------------------- operations
    def resolve(self, key_id):
        """The key uuid key_id names (key id, key ARN, alias name or alias
        ARN, as AWS KMS accepts them), or None.  ARNs must be of this
        fake's region and account, as a regional KMS endpoint wants."""
        if key_id is None:
            return None
        if key_id.startswith("arn:"):
            parts = key_id.split(":", 5)
            if len(parts) != 6 or parts[1] != "aws" or parts[2] != "kms" \
                    or parts[3] != self.region or parts[4] != ACCOUNT:
                return None
            rest = parts[5]
            if rest.startswith("key/"):
                key_id = rest[4:]
            elif rest.startswith("alias/"):
                key_id = rest
            else:
                return None
        if key_id.startswith("alias/"):
            return self.aliases.get(key_id)
        return key_id if key_id in self.keys else None

    def blob_key(self, blob):
        """The key uuid a blob was made under, or None (not our blob)."""
        if not blob.startswith(BLOB_MAGIC) or len(blob) < 8 + 36 + 12 + 16:
            return None
        try:
            kid = blob[8:44].decode()
        except UnicodeDecodeError:
            return None
        return kid if kid in self.keys else None

    @staticmethod
    def aad(ec):
        return json.dumps(ec or {}, sort_keys=True,
                          separators=(",", ":")).encode()

    def wrap(self, kid, plaintext, ec):
        iv = os.urandom(12)
        ct = AESGCM(self.keys[kid]).encrypt(iv, plaintext, self.aad(ec))
        return BLOB_MAGIC + kid.encode() + iv + ct

    def unwrap(self, blob, ec):
        """(kid, plaintext) or raise KeyError/ValueError."""
        if not blob.startswith(BLOB_MAGIC) or len(blob) < 8 + 36 + 12 + 16:
            raise ValueError("not a fake KMS blob")
        kid = blob[8:44].decode()
        iv = blob[44:56]
        pt = AESGCM(self.keys[kid]).decrypt(iv, blob[56:], self.aad(ec))
        return kid, pt


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, ctx):
        self.ctx = ctx
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        # The TLS handshake runs in the handler's thread, so one slow
        # client cannot hold up accept().
        return self.ctx.wrap_socket(sock, server_side=True,
                                    do_handshake_on_connect=False), addr


class KmsError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    kms = None  # set by FakeAwsKms.start

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        try:
            self.connection.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True

    # ---------------------------------------------------------- replies
    def send_json(self, status, obj, ctype="application/x-amz-json-1.1"):
        body = json.dumps(obj).encode()
        self.send_bytes(status, body, ctype)

    def send_bytes(self, status, body, ctype, trickle=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", self.request_id)
        self.end_headers()
        if trickle is None:
            self.wfile.write(body)
            return
        for i in range(0, len(body), 8):
            self.wfile.write(body[i:i + 8])
            self.wfile.flush()
            time.sleep(trickle)

    def send_error_json(self, status, code, message, extra_headers=()):
        body = json.dumps({"__type": code, "message": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", self.request_id)
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def reset(self):
        """Close with RST: SO_LINGER on, timeout 0."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    # ---------------------------------------------------------- request
    def do_GET(self):
        self.request_id = str(uuid.uuid4())
        self.send_error_json(400, "UnknownOperationException", "POST only")

    def do_POST(self):
        kms = self.kms
        self.request_id = str(uuid.uuid4())
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n) if n else b""
        with kms.lock:
            kms.arrived += 1
        target = self.headers.get("X-Amz-Target", "")
        op = target.split(".", 1)[1] if target.startswith(
            "TrentService.") else ""
        try:
            self.check_auth(body)
        except KmsError as e:
            with kms.lock:
                kms.auth_failures[e.code] += 1
            self.send_error_json(e.status, e.code, e.message)
            return
        with kms.lock:
            kms.calls[op] += 1
        f = kms.take_fault(op)
        if f is not None and self.inject(f):
            return
        try:
            if self.headers.get("Content-Type") != \
                    "application/x-amz-json-1.1":
                raise KmsError(400, "SerializationException",
                               "wrong content type")
            req = json.loads(body or b"{}")
            handler = {"GenerateDataKey": self.op_generate,
                       "Encrypt": self.op_encrypt,
                       "Decrypt": self.op_decrypt}.get(op)
            if handler is None:
                raise KmsError(400, "UnknownOperationException",
                               "unknown operation %r" % target)
            with kms.lock:
                kms.contexts.append((op, req.get("EncryptionContext")))
            out = handler(req)
        except KmsError as e:
            self.send_error_json(e.status, e.code, e.message)
            return
        except (ValueError, TypeError) as e:
            self.send_error_json(400, "SerializationException", str(e))
            return
        body = json.dumps(out).encode()
        if f is not None and f.mode == "trickle":
            self.send_bytes(200, body, "application/x-amz-json-1.1",
                            trickle=f.seconds or 0.05)
        else:
            self.send_bytes(200, body, "application/x-amz-json-1.1")

    def check_auth(self, body):
        kms = self.kms
        pairs = list(self.headers.items())
        secrets = {ak: v[0] for ak, v in kms.credentials.items()}
        ok, why, info = verify_request(
            self.command, self.path, pairs, body, secrets, service="kms",
            region=kms.region, max_skew_s=300,
            required_signed=("host", "x-amz-date", "x-amz-target",
                             "content-type"))
        if not ok:
            msgs = {
                "UnrecognizedClientException":
                    "The security token included in the request is invalid.",
                "MissingAuthenticationToken":
                    "Missing Authentication Token",
            }
            raise KmsError(400, why, msgs.get(
                why, "The request signature we calculated does not match "
                     "the signature you provided."))
        akid = parse_authorization(
            self.headers["Authorization"])["access_key"]
        want_token = kms.credentials[akid][1]
        if want_token is not None and \
                self.headers.get("X-Amz-Security-Token") != want_token:
            raise KmsError(400, "UnrecognizedClientException",
                           "The security token included in the request is "
                           "invalid.")

    def inject(self, f):
        """Act out fault f; True when the request is fully handled."""
        m = f.mode
        if m == "500":
            self.send_error_json(500, "KMSInternalException", "injected 500")
        elif m == "503":
            hdrs = [("Retry-After", str(f.retry_after))] \
                if f.retry_after is not None else []
            self.send_error_json(503, "ServiceUnavailableException",
                                 "injected 503", hdrs)
        elif m == "throttle":
            self.send_error_json(400, "ThrottlingException", "Rate exceeded")
        elif m == "notfound":
            self.send_error_json(400, "NotFoundException",
                                 "Key 'injected' does not exist")
        elif m == "denied":
            self.send_error_json(400, "AccessDeniedException",
                                 "User is not authorized (injected)")
        elif m == "reset":
            self.reset()
        elif m == "stall":
            self.kms.release.wait(f.seconds or 30)
            self.reset()
        elif m == "truncate":
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", "400")
            self.send_header("x-amzn-RequestId", self.request_id)
            self.end_headers()
            self.wfile.write(b'{"CiphertextBlob": "AQID')
            self.wfile.flush()
            self.reset()
        elif m == "badjson":
            self.send_bytes(200, b'{"CiphertextBlob": "AQID", "Plain',
                            "application/x-amz-json-1.1")
        elif m == "ctype":
            self.send_bytes(200, b"<html><body>gateway says hi</body></html>",
                            "text/html")
        elif m == "delay":
            time.sleep(f.seconds or 0.5)
            return False
        elif m == "trickle":
            return False
        else:
            raise ValueError("unknown fault " + m)
        return True

    # -------------------------------------------------------- operations
    def key_for(self, key_id):
        kid = self.kms.resolve(key_id)
        if kid is None:
            raise KmsError(400, "NotFoundException",
                           "Key '%s' does not exist" % key_id)
        return kid

    @staticmethod
    def check_ec(req):
        ec = req.get("EncryptionContext")
        if ec is not None and not (isinstance(ec, dict) and all(
                isinstance(k, str) and isinstance(v, str)
                for k, v in ec.items())):
            raise KmsError(400, "ValidationException",
                           "EncryptionContext must map strings to strings")
        return ec or {}

    def op_generate(self, req):
        kid = self.key_for(req.get("KeyId"))
        ec = self.check_ec(req)
        spec, nbytes = req.get("KeySpec"), req.get("NumberOfBytes")
        if (spec is None) == (nbytes is None):
            raise KmsError(400, "ValidationException",
                           "give exactly one of KeySpec and NumberOfBytes")
        n = {"AES_256": 32, "AES_128": 16}.get(spec) if spec else nbytes
        if not isinstance(n, int) or not 1 <= n <= 1024:
            raise KmsError(400, "ValidationException", "bad key size")
        dk = os.urandom(n)
        blob = self.kms.wrap(kid, dk, ec)
        return {"CiphertextBlob": base64.b64encode(blob).decode(),
                "Plaintext": base64.b64encode(dk).decode(),
                "KeyId": self.kms.arn(kid)}

    def op_encrypt(self, req):
        kid = self.key_for(req.get("KeyId"))
        ec = self.check_ec(req)
        pt = base64.b64decode(req.get("Plaintext", ""), validate=True)
        if not 1 <= len(pt) <= 4096:
            raise KmsError(400, "ValidationException", "bad Plaintext")
        blob = self.kms.wrap(kid, pt, ec)
        return {"CiphertextBlob": base64.b64encode(blob).decode(),
                "KeyId": self.kms.arn(kid),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}

    def op_decrypt(self, req):
        """As AWS KMS: a KeyId, when given, is resolved first (unknown:
        NotFoundException) and must be the key the blob was made under
        (else IncorrectKeyException, whatever the context); then the
        blob must open under the context (else InvalidCiphertextException).
        """
        ec = self.check_ec(req)
        blob = base64.b64decode(req.get("CiphertextBlob", ""), validate=True)
        pinned = req.get("KeyId")
        with self.kms.lock:
            self.kms.decrypt_key_ids[pinned] += 1
        blob_kid = self.kms.blob_key(blob)
        if blob_kid is None:
            raise KmsError(400, "InvalidCiphertextException", "")
        if pinned is not None:
            want = self.key_for(pinned)
            if want != blob_kid:
                with self.kms.lock:
                    self.kms.incorrect_key += 1
                raise KmsError(400, "IncorrectKeyException",
                               "The key ID in the request does not identify "
                               "a CMK that can perform this operation.")
        try:
            kid, pt = self.kms.unwrap(blob, ec)
        except Exception:
            raise KmsError(400, "InvalidCiphertextException", "")
        return {"KeyId": self.kms.arn(kid),
                "Plaintext": base64.b64encode(pt).decode(),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
