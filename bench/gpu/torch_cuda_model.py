"""Torch side-by-side for bench_cuda_model: HF transformers' MiniMaxForCausalLM with the same config
(MiniMax-Text-01 shapes, the same slice of layers), bf16 on the same GPU, random weights, its fastest
available implementations (SDPA attention; grouped_mm experts when this transformers has them).

- prefill: one sequence of T tokens with the cache on, its first token greedily (logits_to_keep=1,
  argmax, the id to the host);
- decode: B sequences prefilled with C tokens, then one greedy token per sequence per step through the
  cache, each step fed the previous step's tokens, the ids to the host (as bench_cuda_model does).
Wall clock around each call after torch.cuda.synchronize(), median after one warm-up.
Prints one JSON object (and writes it to --json FILE).
"""
import argparse
import json
import time

import torch


def median_ms(fn, reps):
    times = []
    for i in range(reps + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        if i > 0:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="0,0,0,1")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    import transformers
    from transformers import MiniMaxConfig, MiniMaxForCausalLM

    types = [int(t) for t in args.layers.split(",")]
    alpha = 3.5565588200778455
    kw = dict(vocab_size=200064, hidden_size=6144, intermediate_size=9216, num_hidden_layers=len(types),
              num_attention_heads=64, num_key_value_heads=8, head_dim=128, max_position_embeddings=1048576,
              rms_norm_eps=1e-5, tie_word_embeddings=False, num_experts_per_tok=2, num_local_experts=32,
              layer_types=["linear_attention" if t == 0 else "full_attention" for t in types], block_size=256,
              full_attn_alpha_factor=alpha, full_attn_beta_factor=1.0, linear_attn_alpha_factor=alpha,
              linear_attn_beta_factor=1.0, mlp_alpha_factor=alpha, mlp_beta_factor=1.0)
    try:
        cfg = MiniMaxConfig(**kw, rope_parameters={"rope_type": "default", "rope_theta": 1e7})
    except Exception:
        cfg = MiniMaxConfig(**kw, rope_theta=1e7)
    res = {"transformers": transformers.__version__, "torch": torch.__version__, "layers": args.layers,
           "device": torch.cuda.get_device_name(0), "notes": []}
    t0 = time.perf_counter()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = MiniMaxForCausalLM(cfg)
    model.eval()
    for impl_setter, value in (("set_attn_implementation", "sdpa"), ("set_experts_implementation", "grouped_mm")):
        if hasattr(model, impl_setter):
            try:
                getattr(model, impl_setter)(value)
            except Exception as e:  # keep the default, say so
                res["notes"].append(f"{impl_setter}({value}) failed: {type(e).__name__}: {e}")
    res["attn_implementation"] = str(getattr(model.config, "_attn_implementation", "?"))
    res["experts_implementation"] = str(getattr(model.config, "_experts_implementation", "?"))
    res["weight_GB"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
    res["build_s"] = time.perf_counter() - t0
    print(f"transformers {transformers.__version__}, {res['weight_GB']:.1f} GB, attention "
          f"{res['attn_implementation']}, experts {res['experts_implementation']}", flush=True)
    V = cfg.vocab_size
    res["prefill"] = []
    with torch.inference_mode():
        for T in ([1024, 4096] if args.quick else [1024, 4096, 16384]):
            ids = (torch.arange(T, device="cuda") * 7919 % V).view(1, T)
            try:
                ms = median_ms(lambda: model(input_ids=ids, use_cache=True, logits_to_keep=1).logits[:, -1].argmax(-1).cpu(),
                               3 if T >= 16384 else 5)
                res["prefill"].append({"T": T, "ms": ms, "tokens_per_s": T / (ms * 1e-3)})
                print(f"prefill T={T}: {ms:.2f} ms, {T / (ms * 1e-3):.0f} tok/s", flush=True)
            except Exception as e:
                res["prefill"].append({"T": T, "error": f"{type(e).__name__}: {e}"[:300]})
                print(f"prefill T={T}: {type(e).__name__}: {e}"[:300], flush=True)
            torch.cuda.empty_cache()
        res["decode"] = []
        C, steps = 1024, 8
        for B in ([1, 32] if args.quick else [1, 8, 32, 64]):
            try:
                ids = (torch.arange(B * C, device="cuda") * 104729 % V).view(B, C)
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
                cache = out.past_key_values
                state = {"cache": cache, "next": torch.full((B, 1), 17, device="cuda", dtype=torch.long)}

                def step():
                    o = model(input_ids=state["next"], past_key_values=state["cache"], use_cache=True)
                    state["cache"] = o.past_key_values
                    state["next"] = o.logits[:, -1].argmax(-1).cpu().view(B, 1).to("cuda")

                ms = median_ms(step, steps)
                res["decode"].append({"batch": B, "context": C, "ms_per_step": ms, "tokens_per_s": B / (ms * 1e-3)})
                print(f"decode B={B}: {ms:.3f} ms/step, {B / (ms * 1e-3):.0f} tok/s", flush=True)
                del out, cache, state
            except Exception as e:
                res["decode"].append({"batch": B, "error": f"{type(e).__name__}: {e}"[:300]})
                print(f"decode B={B}: {type(e).__name__}: {e}"[:300], flush=True)
            torch.cuda.empty_cache()
    print(json.dumps(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
