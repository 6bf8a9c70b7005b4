"""Writes the protobuf descriptors that a real Python client ships, as a FileDescriptorSet.

usage: python dump_descriptors.py triton|mlserver OUT.bin
The wire-compatibility test compares these with the descriptors our proto crate compiles.
"""
import sys
from google.protobuf import descriptor_pb2


def modules(kind):
    if kind == "triton":
        from tritonclient.grpc import model_config_pb2, service_pb2
        return [model_config_pb2, service_pb2]
    if kind == "mlserver":
        from mlserver.grpc import dataplane_pb2, model_repository_pb2
        return [dataplane_pb2, model_repository_pb2]
    raise SystemExit(f"unknown kind {kind!r}: expected triton or mlserver")


def main():
    kind, out = sys.argv[1], sys.argv[2]
    fds = descriptor_pb2.FileDescriptorSet()
    for mod in modules(kind):
        fdp = descriptor_pb2.FileDescriptorProto()
        mod.DESCRIPTOR.CopyToProto(fdp)
        fds.file.append(fdp)
    with open(out, "wb") as f:
        f.write(fds.SerializeToString())


if __name__ == "__main__":
    main()
