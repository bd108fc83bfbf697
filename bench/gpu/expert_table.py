"""Short table of the expert FFN run (bench/gpu/run.sh): ours (bench_expert_ffn) beside torch."""
import json
import os
import re
import sys

out = sys.argv[1]
test_rc = sys.argv[2] if len(sys.argv) > 2 else "?"


def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception as e:
        return {"error": str(e)}


b, t = load("expert.json"), load("torch_expert.json")
print("\n==== expert FFN (hidden 6144, 32 experts, inter 9216, top-2), %s ====" % b.get("device", "?"))
if os.path.exists(os.path.join(out, "test.log")):
    log = open(os.path.join(out, "test.log")).read()
    print("tests: rc=%s  %s" % (test_rc, "; ".join(re.findall(r"\[  (?:PASSED|FAILED)  \] [^\n]*", log)[:6])))
    for line in log.splitlines():
        if line.startswith("expert_ffn_") and "worst" in line:
            print(line)
tp = {(r["T"], r["routing"]): r for r in t.get("prefill", [])}
print("%-6s %-8s %9s %9s %9s %7s %5s %10s %10s" % ("T", "routing", "ours ms", "ours TF/s", "dense TF", "ratio", "mode",
                                                   "torch ms", "torch TF/s"))
for r in b.get("prefill", []):
    modes = {"grp": r["grouped_ms"], "loop": r["per_expert_ms"], "loop2": r.get("streams2_ms", 1e30),
             "loop4": r.get("streams4_ms", 1e30), "tiles": r.get("tiles_ms", 1e30)}
    best = min(modes, key=modes.get)
    o = tp.get((r["T"], r["routing"]), {})
    ms = modes[best]
    print("%-6d %-8s %9.3f %9.1f %9.1f %6.0f%% %5s %10s %10s" % (
        r["T"], r["routing"], ms, 6.0 * r["rows"] * 6144 * 9216 / (ms * 1e-3) / 1e12,
        r["dense_tflops"], 100 * r["ratio_best_to_dense"], best, "%.3f" % o["loop_ms"] if o else "-",
        "%.1f" % o["loop_tflops"] if o else "-"))
print("offsets device->host round trip: %.1f us" % b.get("offsets_roundtrip_us", float("nan")))
td = {r["case"]: r for r in t.get("decode", [])}
print("%-18s %10s %10s %10s %10s %12s" % ("decode", "bf16 us", "int8 us", "int8 TB/s", "torch bf16", "torch int8"))
for r in b.get("decode", []):
    o = td.get(r["case"], {})
    print("%-18s %10.1f %10.1f %10.2f %10s %12s" % (
        r["case"], min(r["bf16_grouped_us"], r["bf16_per_expert_us"], r.get("bf16_device_us", 1e30),
                       r.get("bf16_tiles_us", 1e30)), r["int8_us"], r["int8_weight_TBps"],
        "%.1f" % o["bf16_loop_us"] if "bf16_loop_us" in o else "-",
        "%.1f" % o["int8pack_loop_us"] if "int8pack_loop_us" in o else "-"))
print("torch int8:", t.get("int8", t.get("error", "?")))
