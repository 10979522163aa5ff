# Interleaved A/B of run latency over HTTP (issue 13): the same requests alternate between server
# A (e.g. main) and server B, so host load affects both alike; B also times print(1) in a warm
# context. Usage: scripts/bench-interpreter.py <cerver A> <cerver B> <iterations>
import http.client, json, os, subprocess, sys, tempfile, time, statistics

def start(binary):
    data = tempfile.mkdtemp(prefix="cerver-bench-")
    key = subprocess.run([binary, "admin", "create-key", "--email", "b@example.com", "--plan", "pro",
                          "--data-dir", data], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    srv = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--pool-size", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "CERVER_LOG": "warn"})
    while True:
        line = srv.stdout.readline()
        if line.startswith("listening on "):
            host, port = line.split()[-1].split("//")[-1].rsplit(":", 1)
            break
    conn = http.client.HTTPConnection(host, int(port))
    H = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    def post(path, body):
        conn.request("POST", path, json.dumps(body), H)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    _, sb = post("/sandbox", {})
    return srv, post, sb["sandbox_id"]

a_bin, b_bin, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
A, B = start(a_bin), start(b_bin)
st, ctx = B[1](f"/sandbox/{B[2]}/contexts", {})
series = {"A print(1)": [], "B print(1)": [], "B print(1) in context": [], "A 1+1": [], "B 1+1": []}
def timed(srv, body):
    _, post, sid = srv
    t = time.perf_counter()
    st, v = post(f"/sandbox/{sid}/run", body)
    assert st == 200 and v.get("exit_code") == 0, v
    return (time.perf_counter() - t) * 1000
for i in range(10 + n):
    row = [("A print(1)", A, {"code": "print(1)"}), ("B print(1)", B, {"code": "print(1)"}),
           ("B print(1) in context", B, {"code": "print(1)", "context_id": ctx["context_id"]}),
           ("A 1+1", A, {"code": "1+1"}), ("B 1+1", B, {"code": "1+1"})]
    for label, srv, body in row:
        dt = timed(srv, body)
        if i >= 10:
            series[label].append(dt)
for label, ts in series.items():
    ts.sort()
    print(f"  {label:<26} n={n} p50={statistics.median(ts):6.2f} p90={ts[int(n*0.9)]:6.2f} min={ts[0]:6.2f} mean={statistics.mean(ts):6.2f}")
for srv in (A[0], B[0]):
    srv.terminate(); srv.wait()
