# Run inside the old sandbox: the workspace as a tar stream on stdout.
# Only the standard library is on its path: the workspace (first on a run's path) is the
# user's, and a `tarfile.py` there must not run instead. @WORKSPACE@ is replaced by the
# workspace path before it runs.
import sys
sys.path[:] = [p for p in sys.path if p.startswith("/usr/")]
import tarfile
with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as t:
    t.add("@WORKSPACE@", arcname=".")
