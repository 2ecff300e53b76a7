#!/usr/bin/python3
"""A small CRI client for the tests, standing in for crictl (not packaged in Debian 12).

The CRI schema (package runtime.v1) is taken from the containerd binary itself: it embeds
each of its .proto files as a gzipped FileDescriptorProto. Calls go through grpcio with
messages built from that descriptor (Debian: python3-grpcio, python3-protobuf).

  cri.py --socket PATH version
  cri.py --socket PATH runp POD_CONFIG_JSON_FILE     prints the pod sandbox id
  cri.py --socket PATH inspectp ID | stopp ID | rmp ID | pods

Answers are printed as JSON (proto field names). A failed call exits 1 with the gRPC
status on stderr.
"""
import argparse
import json
import re
import sys
import zlib

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

PACKAGE = "runtime.v1"
GZIP_HEADER = re.compile(rb"\x1f\x8b\x08\x00\x00\x00\x00\x00")


def strip_options(messages):
    """gogoproto options refer to a file we do not have; they change nothing on the wire."""
    for message in messages:
        map_entry = message.options.map_entry
        message.ClearField("options")
        if map_entry:
            message.options.map_entry = True
        for field in message.field:
            field.ClearField("options")
        for enum in message.enum_type:
            enum.ClearField("options")
        strip_options(message.nested_type)


def cri_descriptor(binary):
    data = open(binary, "rb").read()
    for match in GZIP_HEADER.finditer(data):
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[match.start():match.start() + 400_000])
        except zlib.error:
            continue
        proto = descriptor_pb2.FileDescriptorProto()
        try:
            proto.ParseFromString(raw)
        except Exception:
            continue
        if proto.package == PACKAGE and any(s.name == "RuntimeService" for s in proto.service):
            del proto.dependency[:]
            proto.ClearField("options")
            strip_options(proto.message_type)
            for enum in proto.enum_type:
                enum.ClearField("options")
            pool = descriptor_pool.DescriptorPool()
            pool.Add(proto)
            return pool
    sys.exit(f"cri.py: no {PACKAGE} RuntimeService in {binary}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--binary", default="/usr/bin/containerd")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("command")
    parser.add_argument("args", nargs="*")
    a = parser.parse_args()
    pool = cri_descriptor(a.binary)
    factory = message_factory.MessageFactory(pool)
    channel = grpc.insecure_channel(f"unix://{a.socket}")

    def call(method, request):
        service = pool.FindServiceByName(f"{PACKAGE}.RuntimeService")
        desc = service.methods_by_name[method]
        request_type = factory.GetPrototype(desc.input_type)
        response_type = factory.GetPrototype(desc.output_type)
        rpc = channel.unary_unary(
            f"/{PACKAGE}.RuntimeService/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        try:
            answer = rpc(json_format.ParseDict(request, request_type()), timeout=a.timeout)
        except grpc.RpcError as e:
            sys.stderr.write(f"{method}: {e.code()}: {e.details()}\n")
            sys.exit(1)
        return json_format.MessageToDict(
            answer, preserving_proto_field_name=True, including_default_value_fields=True
        )

    commands = {
        "version": lambda: call("Version", {"version": "v1"}),
        "runp": lambda: call("RunPodSandbox", {"config": json.load(open(a.args[0]))}),
        "inspectp": lambda: call("PodSandboxStatus", {"pod_sandbox_id": a.args[0], "verbose": True}),
        "stopp": lambda: call("StopPodSandbox", {"pod_sandbox_id": a.args[0]}),
        "rmp": lambda: call("RemovePodSandbox", {"pod_sandbox_id": a.args[0]}),
        "pods": lambda: call("ListPodSandbox", {}),
    }
    if a.command not in commands:
        sys.exit(f"cri.py: unknown command {a.command} ({', '.join(commands)})")
    print(json.dumps(commands[a.command]()))


if __name__ == "__main__":
    main()
