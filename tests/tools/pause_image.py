#!/usr/bin/python3
"""Writes a pause image for containerd's CRI (nothing can be pulled in the tests) as a
`docker save` archive that `ctr images import` takes: one layer holding a static busybox
(Debian: busybox-static) that sleeps, tagged with the name given.

  pause_image.py OUT.tar registry.k8s.io/pause:3.6
"""
import hashlib
import io
import json
import platform
import sys
import tarfile

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def add(archive, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    archive.addfile(info, io.BytesIO(data))


def main():
    out, ref = sys.argv[1], sys.argv[2]
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as archive:
        for directory in ["bin", "dev", "etc", "proc", "sys", "tmp"]:
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        add(archive, "bin/busybox", open("/bin/busybox", "rb").read(), 0o755)
    layer = layer.getvalue()
    config = json.dumps({
        "architecture": ARCH,
        "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox", "sleep", "2147483647"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar"]}])
    with tarfile.open(out, "w") as archive:
        add(archive, config_name, config)
        add(archive, "layer.tar", layer)
        add(archive, "manifest.json", manifest.encode())


if __name__ == "__main__":
    main()
