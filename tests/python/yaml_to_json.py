"""Prints the YAML documents of the files given as one JSON array of {"file", "doc"} objects
(empty documents left out), for the Rust tests of deploy/ (crates/cerver/tests/deploy.rs),
which have no YAML parser of their own. Run with the venv's Python (PyYAML)."""

import json
import sys

import yaml

docs = []
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        for doc in yaml.safe_load_all(f):
            if doc is not None:
                docs.append({"file": path, "doc": doc})
json.dump(docs, sys.stdout)
