"""What CPU bf16 autocast computes in a convolution on this machine (native or emulated bf16).

For ResNet-20's conv shapes, the autocast conv's bf16 output (forward) and its weight gradient
(backward: the bf16 gradient the autocast cast hands back to the fp32 weight) are compared with
the exact (float64) results of the same bf16-rounded inputs. A kernel that multiplies bf16 inputs,
accumulates in fp32 and rounds once to bf16 meets

    |got - exact| <= half a bf16 ulp of got + n * 2^-24 * sum|a*b|

(n terms per result: C*k*k for the output, N*H*W for the weight gradient), and its relative error
(norm) is about a bf16 rounding (2^-9 = 0.2%) whatever the batch. A ratio above 1 in the last
column means a result was rounded more than once on the way (a bf16 accumulator). For the weight
gradient the last column compares it with one such accumulator: each image's exact gradient
added in turn into a bf16 running sum.

    OMP_NUM_THREADS=1 python experiments/bf16_conv_check.py
"""
import torch
import torch.nn.functional as F

from resnet_repro.training.policy import cpu_bf16_flags, cpu_model


def bf16_ulp(v: torch.Tensor) -> torch.Tensor:
    """The spacing of bf16 numbers at |v| (8 significant bits)."""
    return torch.exp2(torch.floor(torch.log2(v.abs().clamp_min(2.0 ** -126))) - 7)


def compare(batch: int, c: int, hw: int, k: int, channels_last: bool) -> list[tuple[str, int, float, float, float, str]]:
    x = torch.randn(batch, c, hw, hw)
    w = (torch.randn(c, c, k, k) * (2.0 / (c * k * k)) ** 0.5).requires_grad_()  # He init (§3.4)
    g = torch.randn(batch, c, hw, hw).bfloat16()  # the gradient arriving from the layer above
    if channels_last:
        x, g = x.to(memory_format=torch.channels_last), g.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = F.conv2d(x, w, padding=k // 2)
    assert y.dtype == torch.bfloat16
    y.backward(g)
    xb, wb, gd = x.bfloat16().double(), w.detach().bfloat16().double(), g.double()
    pad = k // 2
    results = [
        ("output", y.detach().double(), F.conv2d(xb, wb, padding=pad), F.conv2d(xb.abs(), wb.abs(), padding=pad), c * k * k),
        ("weight grad", w.grad.double(), torch.nn.grad.conv2d_weight(xb, w.shape, gd, padding=pad),
         torch.nn.grad.conv2d_weight(xb.abs(), w.shape, gd.abs(), padding=pad), batch * hw * hw),
    ]
    running = torch.zeros(w.shape, dtype=torch.bfloat16)  # a bf16 running sum over the images
    for i in range(batch):
        running = (running.double() + torch.nn.grad.conv2d_weight(xb[i:i + 1], w.shape, gd[i:i + 1], padding=pad)).bfloat16()
    out = []
    for name, got, exact, mass, n in results:
        bound = 0.5 * bf16_ulp(got) + n * 2.0 ** -24 * mass
        same = float((got == exact.bfloat16().double()).double().mean())
        summed = "" if name == "output" else f"{100 * float((got == running.double()).double().mean()):.2f}%"
        out.append((name, got.numel(), 100 * same, float(((got - exact).abs() / bound).max()),
                    float((got - exact).norm() / exact.norm()), summed))
    return out


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {cpu_model()}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16 flags: {', '.join(cpu_bf16_flags()) or 'none'}, "
          f"oneDNN bf16 kernels: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    print()
    print("| batch | C | H=W | k | layout | result | values | exactly round_bf16(exact) | max error / bound "
          "| relative error (norm) | equal to a bf16 running sum over the images |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c, hw, k in [(16, 32, 3), (32, 16, 3), (64, 8, 3), (64, 8, 1)]:
        for batch, channels_last in [(1, False), (128, False), (128, True)]:
            for name, n, same, ratio, rel, summed in compare(batch, c, hw, k, channels_last):
                print(f"| {batch} | {c} | {hw} | {k} | {'channels_last' if channels_last else 'contiguous'} | {name} "
                      f"| {n:,} | {same:.2f}% | {ratio:.2f} | {rel:.2e} | {summed} |")


if __name__ == "__main__":
    main()
