"""Seeds a storage emulator with a directory tree (run with .venv-mlserver/bin/python).

usage: seed_storage.py s3|azure|gcs PORT BUCKET SRC_DIR [KEY=VALUE ...]
Uploads every file under SRC_DIR with its relative path as the key, then any extra literal
KEY=VALUE objects (used to plant hostile keys such as '../x' and empty directory markers).
"""
import json
import os
import sys
import urllib.parse
import urllib.request


def files(src):
    for base, _, names in os.walk(src):
        for n in names:
            p = os.path.join(base, n)
            yield os.path.relpath(p, src).replace(os.sep, "/"), open(p, "rb").read()


def extra(args):
    for a in args:
        k, _, v = a.partition("=")
        yield k, v.encode()


def s3(port, bucket, objects):
    import boto3

    c = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1")
    c.create_bucket(Bucket=bucket)
    for k, v in objects:
        c.put_object(Bucket=bucket, Key=k, Body=v)


AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azure(port, container, objects):
    from azure.storage.blob import BlobServiceClient

    cs = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
          f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    svc = BlobServiceClient.from_connection_string(cs)
    cc = svc.create_container(container)
    for k, v in objects:
        cc.upload_blob(k, v, overwrite=True)


def gcs(port, bucket, objects):
    base = f"http://127.0.0.1:{port}"
    req = urllib.request.Request(f"{base}/storage/v1/b?project=test", data=json.dumps({"name": bucket}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req).read()
    for k, v in objects:
        q = urllib.parse.urlencode({"uploadType": "media", "name": k})
        req = urllib.request.Request(f"{base}/upload/storage/v1/b/{bucket}/o?{q}", data=v,
                                     headers={"Content-Type": "application/octet-stream"}, method="POST")
        urllib.request.urlopen(req).read()


def main():
    kind, port, bucket, src = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    objects = list(files(src)) + list(extra(sys.argv[5:]))
    {"s3": s3, "azure": azure, "gcs": gcs}[kind](port, bucket, objects)


if __name__ == "__main__":
    main()
