"""Competitor for bench_softmax_attention, on the same machine in the same run: torch SDPA with the flash
backend forced (torch.nn.attention.sdpa_kernel(SDPBackend.FLASH_ATTENTION)), bf16, MiniMax shapes
(64 q heads, 8 kv heads, head_dim 128).

(a) prefill, batch 1, causal, T = 4k, 16k, 64k, 128k; TFLOP/s with the same count as ours,
    2 * 2 * T^2/2 * 64 * 128. GQA through enable_gqa=True when the flash backend takes it, else k/v
    expanded to 64 heads before timing (recorded as "gqa"). No RoPE, no cache write (ours includes both).
(b) decode, one query per sequence, batch 1 / 16 / 64 at context 4k / 32k against contiguous (unpaged)
    k/v; us per call (CUDA-graph replay of 20 calls, k/v rotated over >= 256 MB) and KV bytes read per second.

Prints one JSON object (and writes it to --json FILE).
"""
import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

H, KV, D = 64, 8, 128


def time_ms(fn, reps, warmup=1):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
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


def sdpa(q, k, v, causal, gqa):
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        if gqa:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "backend": "FLASH_ATTENTION",
           "flops_note": "2 * 2 * T^2/2 * 64 * 128", "prefill": [], "decode": []}
    lengths = [4096, 16384] if args.quick else [4096, 16384, 65536, 131072]
    for T in lengths:
        q = torch.randn(1, H, T, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, KV, T, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, KV, T, D, device="cuda", dtype=torch.bfloat16)
        gqa = "enable_gqa"
        try:
            sdpa(q, k, v, True, True)
            f = lambda: sdpa(q, k, v, True, True)  # noqa: E731
        except Exception as e:  # noqa: BLE001
            gqa = f"expanded (enable_gqa failed: {type(e).__name__})"
            ke, ve = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
            f = lambda: sdpa(q, ke, ve, True, False)  # noqa: E731
        reps = 3 if T >= 65536 else 10
        ms = time_ms(f, reps)
        tflops = 2 * 2 * T * T / 2 * H * D / (ms * 1e-3) / 1e12
        res["prefill"].append({"T": T, "ms": round(ms, 4), "tflops": round(tflops, 2), "gqa": gqa})
        print(f"torch sdpa flash prefill T={T}: {ms:.3f} ms {tflops:.1f} TFLOP/s ({gqa})", file=sys.stderr, flush=True)
        del q, k, v, f
        torch.cuda.empty_cache()
    for ctx in [4096, 32768]:
        for B in [1, 16, 64]:
            kv_bytes = B * ctx * KV * D * 2 * 2
            copies = max(1, math.ceil(256e6 / kv_bytes))
            ks = [torch.randn(B, KV, ctx, D, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
            vs = [torch.randn(B, KV, ctx, D, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
            q = torch.randn(B, H, 1, D, device="cuda", dtype=torch.bfloat16)
            gqa = True
            try:
                sdpa(q, ks[0], vs[0], False, True)
            except Exception as e:  # noqa: BLE001
                gqa = False
                res.setdefault("decode_note", f"enable_gqa failed ({type(e).__name__}); k/v expanded per call")
            calls = 20

            def step():
                for i in range(calls):
                    kk, vv = ks[i % copies], vs[i % copies]
                    if not gqa:
                        kk, vv = kk.repeat_interleave(H // KV, dim=1), vv.repeat_interleave(H // KV, dim=1)
                    sdpa(q, kk, vv, False, gqa)

            try:
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    step()
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    step()
                fn, graphed = graph.replay, True
            except Exception as e:  # noqa: BLE001
                fn, graphed = step, False
                print(f"graph capture failed: {e}", file=sys.stderr)
            ms = time_ms(fn, 10, warmup=2)
            us = ms * 1e3 / calls
            tbps = kv_bytes / (us * 1e-6) / 1e12
            res["decode"].append({"batch": B, "context": ctx, "us": round(us, 3), "kv_TBps": round(tbps, 4),
                                  "gqa": gqa, "graph": graphed})
            print(f"torch sdpa flash decode B={B} ctx={ctx}: {us:.2f} us {tbps:.3f} TB/s", file=sys.stderr, flush=True)
            del ks, vs, q
            torch.cuda.empty_cache()
    out = json.dumps(res, indent=2)
    print(out)
    if args.json:
        with open(args.json, "w") as f:
            f.write(out)


if __name__ == "__main__":
    main()
