"""Competitors for bench_lightning, on the same machine in the same run (issue 4).

(a) The blocked lightning algorithm in plain torch, as transformers' / the original MiniMax
    `inference` path does it (spec §3.4): block 256, bf16 matmuls for Q K^T and (K decay)^T V,
    fp32 state S, inter part Q S in fp32, output bf16.
(b) FLA's chunk_simple_gla(q, k, v, g_gamma=-s, scale=1) when the `fla` package is importable.
(c) Decode S = e^{-s} S + k^T v, o = q S in torch over fp32 states, replayed from a CUDA graph.

Prints one JSON object (and writes it to --json FILE).
"""
import argparse
import json
import math
import sys

import torch

H, D = 64, 128


def slopes(h=H):
    return torch.tensor([2.0 ** (-(i + 1) / 8.0) for i in range(h)], dtype=torch.float32, device="cuda")


def lightning_blocked(q, k, v, s, state, block=256):
    """q, k, v: [H, T, D] bf16; s: [H] fp32; state: [H, D, D] fp32 (updated). Returns o [H, T, D] bf16."""
    Hh, T, Dd = q.shape
    n = torch.arange(block + 1, device=q.device, dtype=torch.float32)
    sh = s.view(Hh, 1, 1)
    i = torch.arange(block, device=q.device, dtype=torch.float32)
    diag = torch.exp(-sh * (i.view(-1, 1) - i.view(1, -1)))
    diag = torch.where(i.view(-1, 1) >= i.view(1, -1), diag, torch.zeros((), device=q.device))  # [H, B, B]
    q_decay = torch.exp(-sh * (i + 1).view(1, -1, 1))  # [H, B, 1]
    out = torch.empty_like(q)
    S = state
    for t0 in range(0, T, block):
        m = min(block, T - t0)
        qb, kb, vb = q[:, t0:t0 + m], k[:, t0:t0 + m], v[:, t0:t0 + m]
        scores = torch.matmul(qb, kb.transpose(-1, -2)).float() * diag[:, :m, :m]
        o = torch.matmul(scores, vb.float()) + torch.matmul(qb.float(), S) * q_decay[:, :m]
        out[:, t0:t0 + m] = o.to(q.dtype)
        k_decay = torch.exp(-sh * (m - 1 - i[:m]).view(1, -1, 1))
        S = torch.exp(-sh * m) * S + torch.matmul((kb * k_decay.to(kb.dtype)).transpose(-1, -2), vb).float()
    state.copy_(S)
    return out


def time_ms(fn, reps):
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "prefill_torch_blocked": [],
           "prefill_fla_chunk_simple_gla": [], "decode_torch": []}
    s = slopes()
    fla = None
    try:
        from fla.ops.simple_gla import chunk_simple_gla  # noqa: F401
        fla = chunk_simple_gla
        res["fla"] = "imported fla.ops.simple_gla.chunk_simple_gla"
    except Exception as e:  # noqa: BLE001
        res["fla"] = f"not importable: {type(e).__name__}: {e}"
    lengths = [4096, 16384] if args.quick else [4096, 16384, 65536, 131072]
    for T in lengths:
        q, k, v = (torch.rand(H, T, D, device="cuda", dtype=torch.bfloat16) - 0.5 for _ in range(3))
        state = torch.zeros(H, D, D, device="cuda", dtype=torch.float32)
        lightning_blocked(q, k, v, s, state.clone())
        reps = 3 if T >= 65536 else 5
        ms = time_ms(lambda: lightning_blocked(q, k, v, s, state.clone()), reps)
        res["prefill_torch_blocked"].append({"T": T, "ms": round(ms, 3)})
        print(f"torch blocked prefill T={T}: {ms:.2f} ms", file=sys.stderr, flush=True)
        if fla is not None:
            try:
                qf, kf, vf = (x.transpose(0, 1).unsqueeze(0).contiguous() for x in (q, k, v))  # [1, T, H, D]
                g = -s
                f = lambda: fla(qf, kf, vf, g_gamma=g, scale=1.0, output_final_state=True)  # noqa: E731
                f()
                ms = time_ms(f, reps)
                res["prefill_fla_chunk_simple_gla"].append({"T": T, "ms": round(ms, 3)})
                print(f"fla chunk_simple_gla T={T}: {ms:.2f} ms", file=sys.stderr, flush=True)
            except Exception as e:  # noqa: BLE001
                res["prefill_fla_chunk_simple_gla"].append({"T": T, "error": str(e)[:200]})
        del q, k, v
        torch.cuda.empty_cache()
    for B in [1, 16, 64, 256]:
        state_bytes = B * H * D * D * 4
        layers = max(2, (512 << 20) // state_bytes)
        states = [torch.rand(B, H, D, D, device="cuda") for _ in range(layers)]
        qkv = torch.rand(B, H, 3 * D, device="cuda", dtype=torch.bfloat16)
        decay = torch.exp(-s).view(1, H, 1, 1)

        def step():
            q, k, v = qkv[..., :D].float(), qkv[..., D:2 * D].float(), qkv[..., 2 * D:].float()
            outs = []
            for S in states:
                S.mul_(decay).add_(k.unsqueeze(-1) * v.unsqueeze(-2))
                outs.append(torch.matmul(q.unsqueeze(-2), S).to(torch.bfloat16))
            return outs

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        graph.replay()
        torch.cuda.synchronize()
        ms = time_ms(graph.replay, 20)
        us = ms * 1e3 / layers
        tbps = 2 * state_bytes / (us * 1e-6) / 1e12
        res["decode_torch"].append({"batch": B, "us_per_layer_step": round(us, 3), "state_TBps": round(tbps, 3)})
        print(f"torch decode B={B}: {us:.2f} us/layer-step {tbps:.3f} TB/s", file=sys.stderr, flush=True)
        del states, graph
        torch.cuda.empty_cache()
    out = json.dumps(res, indent=2)
    print(out)
    if args.json:
        with open(args.json, "w") as f:
            f.write(out)


if __name__ == "__main__":
    main()
