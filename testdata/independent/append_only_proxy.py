#!/usr/bin/env python3
"""An append-only S3 proxy for the tests: what a bucket looks like through
credentials that may create objects but never delete or replace one.

    append_only_proxy.py LOG

It listens on 127.0.0.1 (the port is printed on the first line of stdout)
and forwards every request, byte for byte and with its signature, to the
S3 endpoint in AWS_ENDPOINT_URL, except that it refuses:

  * every DELETE, and every POST ?delete (DeleteObjects): 403 AccessDenied;
  * a PUT of an object, or a CompleteMultipartUpload, whose key already
    exists (asked of the server with boto3): 412 PreconditionFailed when the
    request carried If-None-Match, else 403 AccessDenied.

Each refused request is appended to LOG as one JSON line: method, key,
status.
"""
import http.client
import http.server
import json
import os
import socketserver
import sys
import threading
import urllib.parse

import boto3
from botocore.config import Config

UPSTREAM = urllib.parse.urlparse(os.environ["AWS_ENDPOINT_URL"])
LOG = sys.argv[1]
LOCK = threading.Lock()
S3 = boto3.client(
    "s3",
    endpoint_url=os.environ["AWS_ENDPOINT_URL"],
    region_name=os.environ.get("AWS_REGION", "us-east-1"),
    config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
)

ERROR = """<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>{code}</Code><Message>{message}</Message></Error>"""


def exists(bucket, key):
    try:
        S3.head_object(Bucket=bucket, Key=key)
        return True
    except S3.exceptions.ClientError as e:
        if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def refuse(self, status, code, key):
        body = ERROR.format(code=code, message="refused by the append-only proxy").encode()
        with LOCK, open(LOG, "a") as f:
            f.write(json.dumps({"method": self.command, "key": key, "status": status}) + "\n")
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def target(self):
        url = urllib.parse.urlparse(self.path)
        parts = urllib.parse.unquote(url.path).lstrip("/").split("/", 1)
        bucket = parts[0]
        key = parts[1] if len(parts) > 1 else ""
        return bucket, key, urllib.parse.parse_qs(url.query, keep_blank_values=True)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        bucket, key, query = self.target()
        if self.command == "DELETE" or (self.command == "POST" and "delete" in query):
            return self.refuse(403, "AccessDenied", key)
        creates = (self.command == "PUT" and key and "partNumber" not in query) or (
            self.command == "POST" and "uploadId" in query
        )
        if creates and exists(bucket, key):
            if self.headers.get("If-None-Match") == "*":
                return self.refuse(412, "PreconditionFailed", key)
            return self.refuse(403, "AccessDenied", key)
        conn = http.client.HTTPConnection(UPSTREAM.hostname, UPSTREAM.port, timeout=60)
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for name, value in resp.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        # A HEAD's Content-Length is the object's size, not its (empty) body's.
        length = resp.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


if __name__ == "__main__":
    server = Server(("127.0.0.1", 0), Proxy)
    print(server.server_address[1], flush=True)
    server.serve_forever()
