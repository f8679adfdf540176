#!/usr/bin/env python3
"""An S3 client that shares no code with pqsync (boto3), for the tests.

    s3_client.py list BUCKET PREFIX        every object under PREFIX/ as one
                                           JSON document: {key relative to
                                           PREFIX/: {size, etag, sha256,
                                           contentType, metadata}}
    s3_client.py get BUCKET KEY            the object's bytes, on stdout
    s3_client.py put BUCKET PREFIX DIR     uploads every file under DIR to
                                           PREFIX/<its relative path>, the key
                                           byte for byte, as ParqueDB does
    s3_client.py delete BUCKET KEY         deletes one object

The endpoint and credentials come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_REGION.
"""
import hashlib
import json
import os
import sys

import boto3
import botocore.handlers
from botocore.config import Config


def client():
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    # botocore asks for `encoding-type=url` listings and decodes every key it
    # gets back, even from a server that ignored the request and sent the
    # keys raw (the in-process test server does): `pct%41` would come back
    # as `pctA`. Ask for raw keys instead; the XML carries them exactly.
    s3.meta.events.unregister(
        "before-parameter-build.s3.ListObjectsV2",
        botocore.handlers.set_list_objects_encoding_type_url,
    )
    return s3


def list_objects(bucket, prefix):
    s3 = client()
    out = {}
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    for page in pages:
        for obj in page.get("Contents", []):
            key = obj["Key"]
            try:
                got = s3.get_object(Bucket=bucket, Key=key)
            except s3.exceptions.NoSuchKey:
                sys.exit(f"listed {key!r}, but a GET of it finds nothing")
            body = got["Body"].read()
            out[key[len(prefix) + 1:]] = {
                "size": obj["Size"],
                "etag": got.get("ETag"),
                "sha256": hashlib.sha256(body).hexdigest(),
                "contentType": got.get("ContentType"),
                "metadata": got.get("Metadata", {}),
            }
    json.dump(out, sys.stdout, ensure_ascii=False, sort_keys=True)


def put_tree(bucket, prefix, root):
    s3 = client()
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            with open(path, "rb") as f:
                s3.put_object(Bucket=bucket, Key=prefix + "/" + rel, Body=f.read())


def main():
    cmd, bucket, prefix = sys.argv[1:4]
    if cmd == "list":
        list_objects(bucket, prefix)
    elif cmd == "get":
        body = client().get_object(Bucket=bucket, Key=prefix)["Body"].read()
        sys.stdout.buffer.write(body)
    elif cmd == "put":
        put_tree(bucket, prefix, sys.argv[4])
    elif cmd == "delete":
        client().delete_object(Bucket=bucket, Key=prefix)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
