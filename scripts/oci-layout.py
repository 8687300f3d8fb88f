#!/usr/bin/env python3
"""scripts/oci-layout.py: writes a root filesystem as a one-layer OCI image-layout archive.

Used by scripts/build-image.sh; Python standard library only (no docker, no registry).
The archive is a tar of an OCI image layout (image-spec v1.1 "image-layout"):

    oci-layout                  {"imageLayoutVersion": "1.0.0"}
    index.json                  one manifest descriptor, annotated with the image name
    blobs/sha256/<digest>       the manifest, the config and the gzip-compressed layer

Deterministic: entries sorted, mtime 0, gzip header without name or time, owner 0:0 except
the paths given with --owner, so the same root filesystem gives the same digest.
Prints the manifest digest (the image digest) and sizes.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def tar_info(name, mode, size=0, kind=tarfile.REGTYPE, uid=0, gid=0):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    return info


def layer_tar(rootfs, owners):
    """The uncompressed layer: every entry of rootfs, sorted, parents before children."""
    paths = []
    for top, dirs, files in os.walk(rootfs):
        for name in dirs + files:
            paths.append(os.path.relpath(os.path.join(top, name), rootfs))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(paths):
            full = os.path.join(rootfs, rel)
            st = os.lstat(full)
            uid, gid = owners.get(rel, (0, 0))
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                tar.addfile(tar_info(rel + "/", mode, kind=tarfile.DIRTYPE, uid=uid, gid=gid))
            elif stat.S_ISREG(st.st_mode):
                info = tar_info(rel, mode, size=st.st_size, uid=uid, gid=gid)
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            else:
                sys.exit(f"oci-layout.py: {full}: only regular files and directories are allowed")
    return buf.getvalue()


def gzip_bytes(data):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return out.getvalue()


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rootfs", required=True, help="the root filesystem directory")
    p.add_argument("--out", required=True, help="the .oci.tar archive to write")
    p.add_argument("--name", required=True, help="image name:tag (index.json ref.name)")
    p.add_argument("--user", required=True, help="config User, uid:gid")
    p.add_argument("--entrypoint", required=True, action="append", default=[])
    p.add_argument("--cmd", action="append", default=[])
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE")
    p.add_argument("--workdir", default="/")
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE")
    p.add_argument("--owner", action="append", default=[], help="PATH=UID:GID in the layer")
    p.add_argument("--created", type=int, default=0, help="seconds since the epoch")
    a = p.parse_args()

    owners = {}
    for o in a.owner:
        path, ids = o.split("=", 1)
        uid, gid = ids.split(":")
        owners[path.strip("/")] = (int(uid), int(gid))

    layer = layer_tar(a.rootfs, owners)
    layer_gz = gzip_bytes(layer)
    created = datetime.datetime.fromtimestamp(a.created, datetime.timezone.utc)
    created = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = dict(label.split("=", 1) for label in a.label)
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": a.user,
            "Entrypoint": a.entrypoint,
            "Cmd": a.cmd,
            "Env": a.env,
            "WorkingDir": a.workdir,
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
        "history": [{"created": created, "created_by": "scripts/build-image.sh"}],
    }
    config_bytes = canonical(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": sha256(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": sha256(layer_gz), "size": len(layer_gz)}],
        "annotations": {"org.opencontainers.image.created": created, **labels},
    }
    manifest_bytes = canonical(manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": sha256(manifest_bytes),
                "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": a.name},
            }
        ],
    }

    files = {
        "oci-layout": canonical({"imageLayoutVersion": "1.0.0"}),
        "index.json": canonical(index),
    }
    for blob in (manifest_bytes, config_bytes, layer_gz):
        files["blobs/sha256/" + sha256(blob).split(":", 1)[1]] = blob

    tmp = a.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tar_info("blobs/", 0o755, kind=tarfile.DIRTYPE))
        tar.addfile(tar_info("blobs/sha256/", 0o755, kind=tarfile.DIRTYPE))
        for name in sorted(files):
            tar.addfile(tar_info(name, 0o644, size=len(files[name])), io.BytesIO(files[name]))
    os.replace(tmp, a.out)

    print(f"image:  {a.name}")
    print(f"digest: {sha256(manifest_bytes)}")
    print(f"layer:  {len(layer)} bytes ({len(layer_gz)} gzip)")
    print(f"archive: {a.out} ({os.path.getsize(a.out)} bytes)")


if __name__ == "__main__":
    main()
