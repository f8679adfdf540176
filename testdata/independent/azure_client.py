#!/usr/bin/env python3
"""An Azure Blob client that shares no code with pqsync (the Python standard
library and Shared Key signing), for the tests and CI's Azurite lane.

    azure_client.py create CONTAINER        creates the container (no error if
                                            it exists)
    azure_client.py list CONTAINER PREFIX   every blob under PREFIX/ as one JSON
                                            document: {name relative to
                                            PREFIX/: {size, sha256}}

The endpoint comes from AZURITE_BLOB_STORAGE_URL (default
http://127.0.0.1:10000); the account and key are Azurite's well-known ones
unless AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY say otherwise.
"""
import base64
import email.utils
import hashlib
import hmac
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

ACCOUNT = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")
KEY = os.environ.get(
    "AZURE_STORAGE_ACCOUNT_KEY",
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
)
ENDPOINT = os.environ.get("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10000").rstrip("/")
VERSION = "2021-08-06"


def request(method, path, query=None):
    """One signed request; `path` starts with /CONTAINER."""
    query = query or {}
    headers = {
        "x-ms-date": email.utils.formatdate(usegmt=True),
        "x-ms-version": VERSION,
    }
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
    # The resource is the path as sent, percent-encoded.
    resource = f"/{ACCOUNT}/{ACCOUNT}{urllib.parse.quote(path)}"
    for k in sorted(query):
        resource += f"\n{k}:{query[k]}"
    content_type = "application/octet-stream" if method == "PUT" else ""
    # VERB, then Content-Encoding, -Language, -Length (empty for 0), -MD5,
    # Content-Type, Date, If-Modified-Since, If-Match, If-None-Match,
    # If-Unmodified-Since and Range, each on its own line.
    fields = ["", "", "", "", content_type, "", "", "", "", "", ""]
    to_sign = method + "\n" + "".join(f + "\n" for f in fields) + canonical_headers + resource
    signature = base64.b64encode(
        hmac.new(base64.b64decode(KEY), to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    headers["Authorization"] = f"SharedKey {ACCOUNT}:{signature}"
    url = f"{ENDPOINT}/{ACCOUNT}{urllib.parse.quote(path)}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, method=method, headers=headers, data=b"" if method == "PUT" else None)
    with urllib.request.urlopen(req) as resp:
        return resp.read()


def create(container):
    try:
        request("PUT", f"/{container}", {"restype": "container"})
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise


def list_blobs(container, prefix):
    out = {}
    marker = ""
    while True:
        query = {"restype": "container", "comp": "list", "prefix": prefix + "/"}
        if marker:
            query["marker"] = marker
        root = ET.fromstring(request("GET", f"/{container}", query))
        for blob in root.iter("Blob"):
            name = blob.findtext("Name")
            body = request("GET", f"/{container}/{name}")
            out[name[len(prefix) + 1:]] = {
                "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        marker = root.findtext("NextMarker") or ""
        if not marker:
            break
    json.dump(out, sys.stdout, ensure_ascii=False, sort_keys=True)


def main():
    cmd = sys.argv[1]
    if cmd == "create":
        create(sys.argv[2])
    elif cmd == "list":
        list_blobs(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
