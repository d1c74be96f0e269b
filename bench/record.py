"""Where every benchmark writes its figures: bench/results/NAME.json (git-ignored)."""

import json
import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write_result(name: str, payload) -> str:
    """Writes `payload` as bench/results/{name}.json and returns the path."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2)
    return path
