#!/usr/bin/env bash
# On the GPU machine, from the repository root: build (unless prebuilt binaries were carried in
# .cache/gpu-lightning), run the CUDA tests (lightning, rmsnorm / DeepNorm, MoE router and permute,
# embedding, greedy sampling), our lightning benchmark, the per-kernel timing lines (bench_kernels) and
# the torch competitor, and print a short table last. Logs and JSON go to $OUT (or ./gpu-out when OUT is unset).
#
# Prebuilt route (development machine, one job):
#   cmake -S . -B build-gpu -G Ninja -DFULGUR_CUDA=ON && ninja -C build-gpu -j1 test_cuda bench_lightning bench_kernels
#   mkdir -p .cache/gpu-lightning/lib && cp build-gpu/bin/{test_cuda,bench_lightning,bench_kernels} .cache/gpu-lightning/
#   cp libopenblas.so.0 libgfortran.so.5 libquadmath.so.0 .cache/gpu-lightning/lib/   (test_cuda's CPU reference)
# then carry .cache/gpu-lightning (BIN=... names another folder). Without it, the benchmarks are built here with
# nvcc (the tests need GoogleTest, CAF and OpenBLAS, which that machine lacks).
#
# Expert FFN (bench_expert_ffn + torch_expert_ffn.py, issue "expert FFN as a grouped GEMM"): prebuilt like above
# (`ninja -C build-gpu2 -j1 test_cuda bench_expert_ffn`, binaries and libs into .cache/gpu-expert), then
#   ONLY=expert BIN=.cache/gpu-expert TEST_FILTER='CudaExpertFfn*' bash bench/gpu/run.sh
# ONLY=expert skips the lightning / MoE-path sections; ONLY=lightning skips the expert one; TEST_FILTER is a
# GoogleTest filter for test_cuda (default: all).
#
# Softmax attention (bench_softmax_attention + torch_softmax_attention.py, issue "softmax attention"): prebuilt
# (`ninja -C build-gpu3 -j1 test_cuda bench_softmax_attention`, binaries and libs into .cache/gpu-softmax), then
#   ONLY=softmax BIN=.cache/gpu-softmax TEST_FILTER='CudaSoftmaxAttention*' bash bench/gpu/run.sh
# ONLY=softmax runs that section alone.
#
# Sampling (bench_kernels' sample lines beside bench/gpu/torch_sampling.py): ONLY=sampling BIN=<folder with bench_kernels>
# Serving on one GPU (bench_cuda_serve: the CUDA engine vs its bare model step): ONLY=serve BIN=<folder> LAYERS=...
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
BIN=${BIN:-.cache/gpu-lightning}
QUICK=${QUICK:-}
ONLY=${ONLY:-}          # '', expert, lightning, softmax, model, sampling or serve
TEST_FILTER=${TEST_FILTER:-*}
export LD_LIBRARY_PATH=$BIN/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}  # cuBLAS for test_cuda_devices

nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu --format=csv 2>&1 | tee "$OUT/gpu.txt"

if [ "$ONLY" = sampling ]; then
  "$BIN/bench_kernels" 2>&1 | grep -i sample | tee "$OUT/sampling.txt"
  PYTHONUNBUFFERED=1 python3 bench/gpu/torch_sampling.py 2>&1 | tee "$OUT/torch_sampling.txt"
  exit 0
fi
if [ "$ONLY" = serve ]; then
  "$BIN/bench_cuda_serve" --layers "${LAYERS:-0,0,0,0,0,0,0,1}" --json "$OUT/serve.json" 2>&1 | tee "$OUT/serve.txt"
  exit 0
fi

# The model forward at MiniMax-Text-01 shapes (bench_cuda_model, prebuilt: it needs the whole library) beside
# transformers' MiniMaxForCausalLM with the same config: ONLY=model BIN=<folder with bench_cuda_model> LAYERS=0,0,0,1
if [ "$ONLY" = model ]; then
  LAYERS=${LAYERS:-0,0,0,1}
  "$BIN/bench_cuda_model" --layers "$LAYERS" ${QUICK:+--quick} --json "$OUT/model.json" 2>&1 | tee "$OUT/model.txt"
  mbench_rc=${PIPESTATUS[0]}
  PYTHONUNBUFFERED=1 python3 bench/gpu/torch_cuda_model.py --layers "$LAYERS" ${QUICK:+--quick} --json "$OUT/torch_model.json" \
    > "$OUT/torch_model.stdout" 2> >(tee "$OUT/torch_model.log" >&2)
  mtorch_rc=$?
  sleep 1
  python3 - "$OUT" <<'EOF2'
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception as e:
        return {"error": str(e)}
b, t = load("model.json"), load("torch_model.json")
ours, i8 = b.get("bf16", {}), b.get("int8", {})
print("\n==== model forward, layers [%s], %s; transformers %s (attention %s, experts %s) ====" % (
    b.get("layers", "?"), t.get("device", "?"), t.get("transformers", "?"), t.get("attn_implementation", "?"),
    t.get("experts_implementation", "?")))
def fmt(x, f):
    return f % x if isinstance(x, (int, float)) else "-"
tp = {r["T"]: r for r in t.get("prefill", [])}
ip = {r["T"]: r for r in i8.get("prefill", [])}
print("%-10s %10s %12s %10s %12s %14s %8s" % ("prefill T", "ours ms", "ours tok/s", "int8 ms", "torch ms", "torch tok/s", "speedup"))
for r in ours.get("prefill", []):
    o, q = tp.get(r["T"], {}), ip.get(r["T"], {})
    print("%-10d %10.2f %12.0f %10s %12s %14s %8s" % (r["T"], r["ms"], r["tokens_per_s"], fmt(q.get("ms"), "%.2f"),
          fmt(o.get("ms"), "%.2f"), fmt(o.get("tokens_per_s"), "%.0f"),
          "%.2fx" % (o["ms"] / r["ms"]) if "ms" in o else o.get("error", "-")[:12]))
td = {r["batch"]: r for r in t.get("decode", [])}
idd = {r["batch"]: r for r in i8.get("decode", [])}
print("%-10s %10s %12s %10s %12s %14s %8s" % ("decode B", "ours ms", "ours tok/s", "int8 ms", "torch ms", "torch tok/s", "speedup"))
for r in ours.get("decode", []):
    o, q = td.get(r["batch"], {}), idd.get(r["batch"], {})
    print("%-10d %10.3f %12.0f %10s %12s %14s %8s" % (r["batch"], r["ms_per_step"], r["tokens_per_s"],
          fmt(q.get("ms_per_step"), "%.3f"), fmt(o.get("ms_per_step"), "%.3f"), fmt(o.get("tokens_per_s"), "%.0f"),
          "%.2fx" % (o["ms_per_step"] / r["ms_per_step"]) if "ms_per_step" in o else o.get("error", "-")[:12]))
EOF2
  echo "rc: bench=$mbench_rc torch=$mtorch_rc"
  exit 0
fi

if [ "$ONLY" = softmax ]; then
  if [ ! -x "$BIN/bench_softmax_attention" ]; then
    mkdir -p "$BIN"
    nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I. bench/gpu/bench_softmax_attention.cu \
      kernels/cuda/softmax_attention.cu kernels/cuda/softmax_attention_sm90.cu kernels/cuda/tma.cu kernels/cuda/runtime.cu \
      -o "$BIN/bench_softmax_attention" 2>&1 | tee "$OUT/build.log"
  fi
  test_rc=skipped
  if [ -x "$BIN/test_cuda" ]; then
    "$BIN/test_cuda" --gtest_color=no --gtest_filter="$TEST_FILTER" > "$OUT/test.log" 2>&1
    test_rc=$?
    grep -E "^\[softmax|^\[  (PASSED|FAILED)|^\[==========|Failure" "$OUT/test.log" | tail -40
  fi
  "$BIN/bench_softmax_attention" ${QUICK:+--quick} --json "$OUT/softmax.json" > "$OUT/softmax.stdout" 2> >(tee "$OUT/softmax.log" >&2)
  sbench_rc=$?
  PYTHONUNBUFFERED=1 python3 bench/gpu/torch_softmax_attention.py ${QUICK:+--quick} --json "$OUT/torch_softmax.json" \
    > "$OUT/torch_softmax.stdout" 2> >(tee "$OUT/torch_softmax.log" >&2)
  storch_rc=$?
  sleep 1
  python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception as e:
        return {"error": str(e)}
b, t = load("softmax.json"), load("torch_softmax.json")
print("\n==== softmax attention, %s, copy %.3f TB/s ====" % (b.get("device", "?"), b.get("copy_bandwidth_TBps", float("nan"))))
tp = {r["T"]: r for r in t.get("prefill", [])}
print("%-8s %9s %9s %10s %10s %12s %12s %8s" % ("prefill", "kernel", "rows/warp", "ours ms", "ours TF/s", "torch ms",
      "torch TF/s", "ratio"))
for r in b.get("prefill", []):
    o = tp.get(r["T"], {})
    ratio = r["tflops"] / o["tflops"] if o.get("tflops") else float("nan")
    print("%-8d %9s %9s %10.3f %10.1f %12s %12s %8.2f" % (r["T"], r.get("kernel", "mma.sync"), r.get("rows_per_warp", "-"),
          r["ms"], r["tflops"], o.get("ms", "-"), o.get("tflops", "-"), ratio))
td = {(r["batch"], r["context"]): r for r in t.get("decode", [])}
print("%-6s %-7s %10s %10s %8s %7s %11s %10s" % ("B", "ctx", "ours us", "ours TB/s", "of copy", "splits", "torch us", "torch TB/s"))
for r in b.get("decode", []):
    o = td.get((r["batch"], r["context"]), {})
    print("%-6d %-7d %10.2f %10.3f %7.0f%% %7d %11s %10s" % (r["batch"], r["context"], r["us"], r["kv_TBps"],
          100 * r["fraction_of_copy_bw"], r["splits"], o.get("us", "-"), o.get("kv_TBps", "-")))
EOF
  echo "rc: tests=$test_rc bench=$sbench_rc torch=$storch_rc"
  exit 0
fi

if [ "$ONLY" != expert ]; then
if [ ! -x "$BIN/bench_lightning" ]; then
  mkdir -p "$BIN"
  nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I. bench/gpu/bench_lightning.cu \
    kernels/cuda/lightning_attention.cu kernels/cuda/runtime.cu -o "$BIN/bench_lightning" 2>&1 | tee "$OUT/build.log"
fi
if [ ! -x "$BIN/bench_kernels" ]; then
  mkdir -p "$BIN"
  nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I. bench/gpu/bench_kernels.cu kernels/cuda/rmsnorm.cu \
    kernels/cuda/moe_router.cu kernels/cuda/moe_permute.cu kernels/cuda/embedding.cu kernels/cuda/sampling.cu \
    -o "$BIN/bench_kernels" 2>&1 | tee -a "$OUT/build.log"
fi
fi
if [ "$ONLY" != lightning ] && [ ! -x "$BIN/bench_expert_ffn" ]; then
  mkdir -p "$BIN"
  nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I. bench/gpu/bench_expert_ffn.cu kernels/cuda/expert_ffn.cu \
    -lcublas -o "$BIN/bench_expert_ffn" 2>&1 | tee -a "$OUT/build.log"
fi

test_rc=skipped
if [ -x "$BIN/test_cuda" ]; then
  "$BIN/test_cuda" --gtest_color=no --gtest_filter="$TEST_FILTER" 2>&1 | tee "$OUT/test.log"
  test_rc=${PIPESTATUS[0]}
fi

devices_rc=skipped
if [ -x "$BIN/test_cuda_devices" ]; then
  "$BIN/test_cuda_devices" --gtest_color=no 2>&1 | tee "$OUT/test_devices.log"
  devices_rc=${PIPESTATUS[0]}
fi

expert_rc=skipped
etorch_rc=skipped
if [ "$ONLY" != lightning ]; then
  "$BIN/bench_expert_ffn" ${QUICK:+--quick} --json "$OUT/expert.json" 2>&1 | tee "$OUT/expert.txt"
  expert_rc=${PIPESTATUS[0]}
  PYTHONUNBUFFERED=1 python3 bench/gpu/torch_expert_ffn.py ${QUICK:+--quick} --json "$OUT/torch_expert.json" \
    > "$OUT/torch_expert.stdout" 2> >(tee "$OUT/torch_expert.log" >&2)
  etorch_rc=$?
  sleep 1
  python3 bench/gpu/expert_table.py "$OUT" "$test_rc"
fi
if [ "$ONLY" = expert ]; then
  echo "rc: tests=$test_rc expert=$expert_rc torch=$etorch_rc"
  exit 0
fi

"$BIN/bench_kernels" > "$OUT/bench_kernels.txt" 2>&1
kernels_rc=$?
"$BIN/bench_lightning" ${QUICK:+--quick} --json "$OUT/bench.json" > "$OUT/bench.stdout" 2> >(tee "$OUT/bench.log" >&2)
bench_rc=$?
PYTHONUNBUFFERED=1 python3 bench/gpu/torch_lightning.py ${QUICK:+--quick} --json "$OUT/torch.json" > "$OUT/torch.stdout" \
  2> >(tee "$OUT/torch.log" >&2)
torch_rc=$?
sleep 1

python3 - "$OUT" "$test_rc" <<'EOF'
import json, os, re, sys
out, test_rc = sys.argv[1], sys.argv[2]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception as e:
        return {"error": str(e)}
b, t = load("bench.json"), load("torch.json")
print("\n==== lightning attention, %s ====" % b.get("device", "?"))
if os.path.exists(os.path.join(out, "test.log")):
    log = open(os.path.join(out, "test.log")).read()
    m = re.findall(r"\[  (PASSED|FAILED)  \].*", log)
    print("tests: rc=%s  %s" % (test_rc, "; ".join(x for x in re.findall(r"\[  (?:PASSED|FAILED)  \] [^\n]*", log)[:6])))
print("copy bandwidth (D2D, read+write): %.3f TB/s" % b.get("copy_bandwidth_TBps", float("nan")))
print("exactness vs fp32 recurrence:", json.dumps(b.get("exactness_vs_fp32_recurrence")))
tp = {r["T"]: r["ms"] for r in t.get("prefill_torch_blocked", [])}
fl = {r["T"]: r.get("ms") for r in t.get("prefill_fla_chunk_simple_gla", [])}
print("exactness, split_state off:", json.dumps(b.get("exactness_vs_fp32_recurrence_split_state_off")))
print("%-8s %-12s %10s %12s %8s %12s %10s" % ("prefill", "blk/SM,split", "ours ms", "roofline ms", "ratio", "torch ms", "fla ms"))
for r in b.get("prefill", []):
    print("%-8d %-12s %10.3f %12.3f %8.2f %12s %10s" % (r["T"], "%d,%d" % (r["blocks_per_sm"], r["split_state"]), r["ms"], r["roofline_ms"],
          r["ratio_to_roofline"], tp.get(r["T"], "-"), fl.get(r["T"], "-")))
print("FLA:", t.get("fla", "?"))
td = {r["batch"]: r for r in t.get("decode_torch", [])}
print("%-8s %12s %10s %8s %14s %10s" % ("decode B", "ours us/step", "ours TB/s", "of copy", "torch us/step", "torch TB/s"))
for r in b.get("decode", []):
    o = td.get(r["batch"], {})
    print("%-8d %12.2f %10.3f %7.0f%% %14s %10s" % (r["batch"], r["us_per_layer_step"], r["state_TBps"],
          100 * r["fraction_of_copy_bw"], o.get("us_per_layer_step", "-"), o.get("state_TBps", "-")))
EOF
echo "==== MoE-path kernels (bench_kernels) ===="
cat "$OUT/bench_kernels.txt"
echo "rc: tests=$test_rc devices=$devices_rc bench=$bench_rc kernels=$kernels_rc torch=$torch_rc expert=$expert_rc expert_torch=$etorch_rc"
