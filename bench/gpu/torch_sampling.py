"""torch's sampling of the same rows as bench_kernels' `sample` lines (vocab 200064, f32 logits uniform
in [-4, 4]): the usual recipe of transformers' logits processors - temperature, top-k by torch.topk,
top-p by a full descending sort + softmax + cumsum mask, then torch.multinomial. CUDA events, median
of 20 runs after 3 warm-ups. Prints lines in bench_kernels' format with a `torch ` prefix.

    python3 bench/gpu/torch_sampling.py
"""
import torch

VOCAB = 200064


def sample(logits, temperature, top_k=0, top_p=1.0):
    z = logits / temperature
    if top_k:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sorted_z, order = torch.sort(z, descending=True, dim=-1)
        cum = torch.softmax(sorted_z, dim=-1).cumsum(dim=-1)
        drop = cum - torch.softmax(sorted_z, dim=-1) >= top_p  # keep the prefix reaching top_p
        sorted_z = sorted_z.masked_fill(drop, float("-inf"))
        z = torch.empty_like(z).scatter_(-1, order, sorted_z)
    return torch.multinomial(torch.softmax(z, dim=-1), 1)


def median_us(fn, reps=20, warm=3):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    gen = torch.Generator(device="cuda").manual_seed(9)
    for rows in (1, 64, 256):
        logits = torch.rand(rows, VOCAB, device="cuda", generator=gen) * 8 - 4
        cases = [("sample t=1", dict(temperature=1.0)),
                 ("sample t=0.7 top_k=50 top_p=0.9", dict(temperature=0.7, top_k=50, top_p=0.9)),
                 ("sample t=1 top_p=0.95", dict(temperature=1.0, top_p=0.95))]
        us = median_us(lambda: torch.argmax(logits, dim=-1))
        print(f"torch {'argmax':<28} B={rows:<6} {us:9.1f} us")
        for name, kw in cases:
            us = median_us(lambda: sample(logits, **kw))
            print(f"torch {name:<28} B={rows:<6} {us:9.1f} us")


if __name__ == "__main__":
    main()
