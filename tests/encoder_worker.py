"""Fresh-process check of exported user encoders: imports only jax and numpy, never model code.

    python tests/encoder_worker.py OUT.npz ENCODER_DIR:INPUTS.npz [ENCODER_DIR:INPUTS.npz ...]

For each pair: deserializes ENCODER_DIR/encoder.bin, loads ENCODER_DIR/constants.npz, calls the
encoder on the arrays of INPUTS.npz (history, history_uploader, history_tags, mask) and stores the
outputs as OUT.npz["{i}/interests"], OUT.npz["{i}/valid"]. Exits with status 3 if any mirecall_jax,
flax or optax module got imported along the way.
"""

import sys

import jax
import numpy as np


def run(encoder_dir: str, inputs_path: str):
    with open(f"{encoder_dir}/encoder.bin", "rb") as fh:
        exported = jax.export.deserialize(bytearray(fh.read()))
    with np.load(f"{encoder_dir}/constants.npz") as z:
        constants = [z[f"c{i:04d}"] for i in range(len(z.files))]
    with np.load(inputs_path) as z:
        args = [z[k] for k in ("history", "history_uploader", "history_tags", "mask")]
    interests, valid = exported.call(constants, *args)
    return np.asarray(interests), np.asarray(valid)


def main(argv):
    out, pairs = argv[1], argv[2:]
    results = {}
    for i, pair in enumerate(pairs):
        encoder_dir, inputs_path = pair.rsplit(":", 1)
        results[f"{i}/interests"], results[f"{i}/valid"] = run(encoder_dir, inputs_path)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("mirecall_jax", "flax", "optax"))
    if leaked:
        print(f"model code imported: {leaked}", file=sys.stderr)
        sys.exit(3)
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv)
