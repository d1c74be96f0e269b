"""The serving artifact directory: layout, manifest, sha256 verification, load errors.

Layout (every path relative, so the directory can be moved or copied; all listed in the manifest):

  manifest.json              format version, family, config, versions, sizes, step, index params and
                             measured recall, encoder signature, sha256 of every other file
  item_embeddings.npy        [M, D] float32: the item tower's output for item index i (row 0 = padding, zeros)
  item_ids.json              [M] external item ids (JSON list of strings; index 0 = "" = padding)
  side_tables.npz            item_uploader [M] int32, item_tags [M, T] int32 (what the encoder's inputs are
                             built from), item_category [M] int32 (-1 unknown), category_ids [C] str,
                             item_count [M] int64 (training popularity: the fallback ranking),
                             activation_global [K] float32 (dynamic-capacity table; empty when unused),
                             item_topic [M] int32 (synthetic data only: the planted topic)
  encoder/encoder.bin        the user encoder, `jax.export` serialized (StableHLO, symbolic batch)
  encoder/constants.npz      the encoder's constant inputs c0000, c0001, ... (model parameters, capacity
                             table; for a parameter-free encoder such as PinnerSage: whatever it reads,
                             e.g. the item embeddings) in the order the encoder takes them
  index/                     the ScaNN searcher (serialized with relative asset paths)

Loading checks, in this order, and raises `ArtifactError` naming the problem: the directory and
manifest exist and parse; the format version is one this code reads (a newer one is refused, never
guessed at); every required file is listed; every listed file exists and has its recorded sha256.
"""

from __future__ import annotations

import hashlib
import json
import os

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_FILES = ("item_embeddings.npy", "item_ids.json", "side_tables.npz", "encoder/encoder.bin",
                  "encoder/constants.npz", "index/scann_assets.pbtxt")
REQUIRED_KEYS = ("format_version", "family", "embed_dim", "num_interests", "max_len", "max_tags", "num_items",
                 "checkpoint_step", "files", "index", "encoder")


class ArtifactError(RuntimeError):
    """The artifact directory is missing, incomplete, corrupt or from a newer format."""


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def list_files(directory: str) -> list[str]:
    """Every regular file under `directory` except the manifest, as sorted '/'-separated relative paths."""
    out = []
    for root, _, files in os.walk(directory):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/")
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def write_manifest(directory: str, manifest: dict) -> dict:
    """Add format_version and the sha256 of every file, then write manifest.json (last, atomically)."""
    manifest = dict(manifest)
    manifest["format_version"] = FORMAT_VERSION
    manifest["files"] = {rel: sha256_file(os.path.join(directory, rel)) for rel in list_files(directory)}
    missing = [f for f in REQUIRED_FILES if f not in manifest["files"]]
    if missing:
        raise ArtifactError(f"{directory}: cannot write a manifest, required files missing: {missing}")
    tmp = os.path.join(directory, MANIFEST + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True, allow_nan=False)
    os.replace(tmp, os.path.join(directory, MANIFEST))
    return manifest


def read_manifest(directory: str, verify: bool = True) -> dict:
    """The manifest of `directory`, after checking format version, completeness and (verify) sha256."""
    if not os.path.isdir(directory):
        raise ArtifactError(f"{directory}: artifact directory not found")
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise ArtifactError(f"{path}: manifest missing; not an artifact directory, or the export did not finish")
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: manifest is not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: manifest must be a JSON object")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArtifactError(f"{path}: format_version missing or not an integer ({version!r})")
    if version > FORMAT_VERSION:
        raise ArtifactError(f"{path}: artifact format version {version} is newer than this code reads "
                            f"(<= {FORMAT_VERSION}); upgrade mirecall_jax or re-export with this version")
    if version < 1:
        raise ArtifactError(f"{path}: invalid format_version {version}")
    missing_keys = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing_keys:
        raise ArtifactError(f"{path}: manifest lacks required keys {missing_keys}")
    files = manifest["files"]
    if not isinstance(files, dict):
        raise ArtifactError(f"{path}: 'files' must map relative paths to sha256 digests")
    unlisted = [f for f in REQUIRED_FILES if f not in files]
    if unlisted:
        raise ArtifactError(f"{path}: required files not listed in the manifest: {unlisted}")
    for rel, digest in sorted(files.items()):
        full = os.path.join(directory, *rel.split("/"))
        if os.path.isabs(rel) or ".." in rel.split("/"):
            raise ArtifactError(f"{path}: file path {rel!r} escapes the artifact directory")
        if not os.path.isfile(full):
            raise ArtifactError(f"{full}: missing (listed in the manifest); the artifact is incomplete")
        if verify:
            actual = sha256_file(full)
            if actual != digest:
                raise ArtifactError(f"{full}: sha256 mismatch (manifest {digest[:12]}..., file {actual[:12]}...); "
                                    f"the file is corrupt or was modified after export")
    return manifest
