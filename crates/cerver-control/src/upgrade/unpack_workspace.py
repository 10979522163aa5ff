# Run inside the new sandbox: the tar stream from stdin into the workspace (see
# pack_workspace.py for the path and the placeholder).
import sys
sys.path[:] = [p for p in sys.path if p.startswith("/usr/")]
import tarfile
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as t:
    t.extractall("@WORKSPACE@")
