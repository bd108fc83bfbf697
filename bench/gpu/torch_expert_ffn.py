"""Torch side-by-side for bench_expert_ffn (same shapes, same routing, same machine and run):

(a) the MoE expert FFN as HF transformers' MiniMax block runs it: a per-expert loop of bf16 matmuls,
    h = x_e @ w13[e]^T, a = silu(h[:, :I]) * h[:, I:], y_e = a @ w2[e]^T;
(b) torch dense bf16 matmuls of the same FLOPs ([2T, hidden] x [hidden, 2I] + [2T, I] x [I, hidden]);
(c) decode sizes: (a) in bf16, and, where torch has it for CUDA, torch._weight_int8pack_mm over
    row-wise int8 weights (the same quantisation as ours).

Prints one JSON object (and writes it to --json FILE).
"""
import argparse
import json
import math

import torch
import torch.nn.functional as F

H, E, I = 6144, 32, 9216


def routing(kind, rows):
    if kind == "uniform":
        return [rows // E + (e < rows % E) for e in range(E)]
    if kind == "zipf":
        hs = sum(1.0 / (e + 1) for e in range(E))
        c = [int(rows / (hs * (e + 1))) for e in range(E)]
        c[0] += rows - sum(c)
        return c
    c = [0] * E  # half
    c[0] = rows // 2
    rest = rows - c[0]
    for e in range(1, E):
        c[e] = rest // 31 + (e - 1 < rest % 31)
    return c


def time_ms(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def expert_loop(x, w13, w2, counts, y):
    o = 0
    for e, n in enumerate(counts):
        if n == 0:
            continue
        h = x[o:o + n] @ w13[e].t()
        a = F.silu(h[:, :I]) * h[:, I:]
        torch.mm(a, w2[e].t(), out=y[o:o + n])
        o += n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = "cuda"
    Ts = [4096] if args.quick else [4096, 16384, 65536]
    max_rows = 2 * Ts[-1]
    w13 = (torch.rand(E, 2 * I, H, device=dev, dtype=torch.bfloat16) * 2 - 1) / math.sqrt(H)
    w2 = (torch.rand(E, H, I, device=dev, dtype=torch.bfloat16) * 2 - 1) / math.sqrt(I)
    x = torch.rand(max_rows, H, device=dev, dtype=torch.bfloat16) * 2 - 1
    y = torch.empty(max_rows, H, device=dev, dtype=torch.bfloat16)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "prefill": [], "decode": []}
    for T in Ts:
        rows = 2 * T
        flops = 6.0 * rows * H * I
        reps = 5 if T >= 65536 else 10
        h = torch.empty(rows, 2 * I, device=dev, dtype=torch.bfloat16)
        a = torch.rand(rows, I, device=dev, dtype=torch.bfloat16) * 2 - 1  # random, not zeros (METHOD.md)

        def dense():
            torch.mm(x[:rows], w13[0].t(), out=h)
            torch.mm(a, w2[0].t(), out=y[:rows])

        dense_ms = time_ms(dense, reps)
        del h, a
        for kind in ("uniform", "zipf", "half"):
            counts = routing(kind, rows)
            ms = time_ms(lambda: expert_loop(x, w13, w2, counts, y), reps)
            r = {"T": T, "routing": kind, "loop_ms": ms, "loop_tflops": flops / ms / 1e9, "dense_ms": dense_ms,
                 "dense_tflops": flops / dense_ms / 1e9}
            res["prefill"].append(r)
            print(json.dumps(r), flush=True)

    # decode sizes
    q13 = s13 = q2 = s2 = None
    int8_note = "torch._weight_int8pack_mm"
    try:
        s13 = (w13.float().abs().amax(dim=2) / 127).clamp_min(1e-12)
        q13 = torch.round(w13.float() / s13[..., None]).clamp(-127, 127).to(torch.int8)
        s2 = (w2.float().abs().amax(dim=2) / 127).clamp_min(1e-12)
        q2 = torch.round(w2.float() / s2[..., None]).clamp(-127, 127).to(torch.int8)
        torch._weight_int8pack_mm(x[:1], q13[0], s13[0].to(torch.bfloat16))
    except Exception as ex:  # not every build has the CUDA kernel
        int8_note = "unavailable: %s" % str(ex).splitlines()[0][:200]
        q13 = None
    torch.cuda.empty_cache()

    def int8_loop(counts):
        o = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            hh = torch._weight_int8pack_mm(x[o:o + n], q13[e], s13[e].to(torch.bfloat16))
            aa = F.silu(hh[:, :I]) * hh[:, I:]
            y[o:o + n] = torch._weight_int8pack_mm(aa, q2[e], s2[e].to(torch.bfloat16))
            o += n

    for name, experts, per in (("1 token top-2", 2, 1), ("32 experts x 1", 32, 1), ("32 experts x 4", 32, 4),
                               ("32 experts x 16", 32, 16), ("32 experts x 64", 32, 64)):
        counts = [0] * E
        for i in range(experts):
            counts[i * (E // experts)] = per
        r = {"case": name, "bf16_loop_us": 1e3 * time_ms(lambda: expert_loop(x, w13, w2, counts, y), 20)}
        if q13 is not None:
            r["int8pack_loop_us"] = 1e3 * time_ms(lambda: int8_loop(counts), 20)
        res["decode"].append(r)
        print(json.dumps(r), flush=True)
    res["int8"] = int8_note
    print(json.dumps(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
