"""ESTIMATE, on paper (no GPU measured): the cost of one training pair at the paper preset, and the pairs/s it implies.

    python -m benchmarks.estimate_gpu_cost [--utilisation 0.1,0.2,0.4] [--json out.json]

Counts multiply-accumulates (MACs; FLOPs = 2 x MACs) of
* StyleGAN2 (config F, 1024 px, NVIDIA's stylegan2-ada-pytorch layout) synthesis, per resolution block, for the full
  image and for synthesis stopped at the block a 224 px training image needs (256 px: StyleGAN2's "skip" generator
  emits an RGB image at every block, so stopping there is possible);
* StyleGAN3-T and -R (1024 px) synthesis, layer by layer, following the layer sizes of NVIDIA's
  `training/networks_stylegan3.py` (conv MACs exact for that layout; the filtered-leaky-ReLU resampling MACs are an
  approximation, separable polyphase FIRs; StyleGAN3 has no per-resolution RGB outputs, so it cannot stop early);
* ResNet50 at 224 px: 4.09 GMACs forward (torchvision's figure), forward + backward taken as 3 x forward, for the
  three views of a pair (x~, x~' and y~).
Elementwise work (bias, activations, noise, normalisation, augmentation) is not counted: it is memory-bound and adds
time that this count does not see, one reason real utilisation is well below peak.

The pairs/s figures divide an H100 SXM's dense bf16 peak (989 TFLOP/s) times an ASSUMED utilisation by the FLOPs of a
pair. They are estimates, not measurements.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

H100_BF16_DENSE = 989e12  # FLOP/s, H100 SXM, no sparsity
A100_BF16_DENSE = 312e12
RESNET50_FWD_MACS_224 = 4.09e9
PAPER_PAIRS_PER_S_PER_A100 = 166  # as stated in issue 14 (the paper's training time and scale)
GOAL_PAIRS_PER_S_H100 = 1000


def stylegan2_blocks(resolution: int = 1024, channel_base: int = 32768, channel_max: int = 512, w_dim: int = 512):
    """MACs per image of each synthesis block (config F): [(res, macs)]. Fused modconv: per-sample weights included."""
    ch = {r: min(channel_base // r, channel_max) for r in (2 ** k for k in range(2, int(math.log2(resolution)) + 1))}
    blocks = []
    for res, cout in ch.items():
        macs = 0.0
        if res == 4:
            layers = [(cout, cout, 3, res)]  # conv1 on the learned constant
        else:
            cin = ch[res // 2]
            macs += cin * cout * 9 * (res // 2) ** 2  # conv0: transposed conv, stride 2, from res/2
            macs += cout * 16 * (res + 1) ** 2  # 4x4 FIR blur after the transposed conv
            layers = [(cout, cout, 3, res)]  # conv1
            macs += w_dim * cin + cout * cin * 9  # conv0's affine and per-sample weights/demodulation
        for cin_, cout_, k, r in layers:
            macs += cin_ * cout_ * k * k * r * r + w_dim * cin_ + cout_ * cin_ * k * k
        macs += cout * 3 * res * res + w_dim * cout  # toRGB (1x1)
        if res > 4:
            macs += 3 * 16 * res * res  # upsampling the running RGB image
        blocks.append((res, macs))
    return blocks


def stylegan3_layers(config: str = "t", resolution: int = 1024, w_dim: int = 512, channel_base=None):
    """MACs per image of each StyleGAN3 synthesis layer: [(name, conv_macs, filter_macs)]."""
    base, channel_max, kernel, radial = (32768, 512, 3, False) if config == "t" else (65536, 1024, 1, True)
    channel_base = channel_base or base
    num_layers, num_critical, first_cutoff, first_stopband, last_stopband_rel, margin = 14, 2, 2, 2 ** 2.1, 2 ** 0.3, 10
    last_cutoff = resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, resolution))))
    sizes = rates + margin * 2
    sizes[-2:] = resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = 3
    out = []
    for idx in range(num_layers + 1):
        prev = max(idx - 1, 0)
        torgb = idx == num_layers
        k = 1 if torgb else kernel
        cin, cout = channels[prev], channels[idx]
        conv_size = sizes[prev] + k - 1
        conv = cin * cout * k * k * conv_size ** 2 + w_dim * cin + cout * cin * k * k
        filt = 0.0
        if not torgb:
            tmp_rate = max(rates[prev], rates[idx]) * 2
            up, down = int(tmp_rate / rates[prev]), int(tmp_rate / rates[idx])
            up_taps, down_taps = 6 * up if up > 1 else 1, 6 * down if down > 1 else 1
            up_size = conv_size * up
            filt += cout * up_size ** 2 * 2 * up_taps / up  # separable polyphase upsampling
            critical = idx >= num_layers - num_critical
            if radial and not critical:
                filt += cout * sizes[idx] ** 2 * down_taps ** 2  # radially symmetric (non-separable) downsampling
            else:
                filt += cout * (up_size * sizes[idx] + sizes[idx] ** 2) * down_taps
        out.append((f"L{idx}_{int(sizes[idx])}_{int(cout)}", float(conv), float(filt)))
    return out


def estimate(utilisations):
    sg2 = stylegan2_blocks()
    sg2_full = sum(m for _, m in sg2)
    sg2_256 = sum(m for r, m in sg2 if r <= 256)
    sg3 = {c: stylegan3_layers(c) for c in ("t", "r")}
    sg3_total = {c: sum(a + b for _, a, b in layers) for c, layers in sg3.items()}
    sg3_conv = {c: sum(a for _, a, _ in layers) for c, layers in sg3.items()}
    resnet = 3 * 3 * RESNET50_FWD_MACS_224  # 3 views, forward + backward = 3 x forward
    gens = {
        "StyleGAN2-F 1024 px, full": sg2_full,
        "StyleGAN2-F, stopped at the 256 px block": sg2_256,
        "StyleGAN3-T 1024 px": sg3_total["t"],
        "StyleGAN3-R 1024 px": sg3_total["r"],
        # the paper's split: 3 attributes on StyleGAN (2), 40 on StyleGAN3 (T assumed), drawn uniformly
        "paper mix 3/43 StyleGAN2 + 40/43 StyleGAN3-T": 3 / 43 * sg2_full + 40 / 43 * sg3_total["t"],
        "paper mix, StyleGAN2 part stopped at 256 px": 3 / 43 * sg2_256 + 40 / 43 * sg3_total["t"],
        # 256 px generators (NVIDIA's 256 px configs use a halved channel base, 16384): the cost if one trains at
        # 224 px from generators made for that size
        "StyleGAN2 256 px (channel base 16384)": sum(m for _, m in stylegan2_blocks(256, 16384)),
        "StyleGAN3-T 256 px (channel base 16384)": sum(a + b for _, a, b in stylegan3_layers("t", 256, channel_base=16384)),
    }
    rows = []
    for name, per_image in gens.items():
        pair_flops = 2 * (2 * per_image + resnet)  # x and y synthesised, ResNet50 on 3 views
        rows.append({"generator": name, "synthesis_gmacs_per_image": per_image / 1e9,
                     "pair_gflops": pair_flops / 1e9,
                     "generator_share": 2 * per_image / (2 * per_image + resnet),
                     "h100_pairs_per_s": {u: u * H100_BF16_DENSE / pair_flops for u in utilisations},
                     "utilisation_for_1000_pairs_per_s": GOAL_PAIRS_PER_S_H100 * pair_flops / H100_BF16_DENSE})
    paper_mix = rows[4]["pair_gflops"] * 1e9
    return {
        "stylegan2_blocks_gmacs": {r: m / 1e9 for r, m in sg2},
        "stylegan3_conv_gmacs": {c: v / 1e9 for c, v in sg3_conv.items()},
        "stylegan3_total_gmacs": {c: v / 1e9 for c, v in sg3_total.items()},
        "resnet50_3_views_fwd_bwd_gflops": 2 * resnet / 1e9,
        "rows": rows,
        "paper_a100_utilisation_implied": PAPER_PAIRS_PER_S_PER_A100 * paper_mix / A100_BF16_DENSE,
        "paper_a100_utilisation_resnet_only": PAPER_PAIRS_PER_S_PER_A100 * 2 * resnet / A100_BF16_DENSE,
        "resnet_only_h100_pairs_per_s": {u: u * H100_BF16_DENSE / (2 * resnet) for u in utilisations},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utilisation", default="0.1,0.2,0.4", help="assumed fractions of the bf16 peak")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    utils = [float(u) for u in args.utilisation.split(",")]
    e = estimate(utils)
    print("ESTIMATE (on paper, not measured)\n")
    print("StyleGAN2-F synthesis per image, GMACs by block: "
          + ", ".join(f"{r}: {m:.2f}" for r, m in e["stylegan2_blocks_gmacs"].items()))
    print(f"StyleGAN3 synthesis per image, GMACs (conv only / with resampling filters): "
          f"T {e['stylegan3_conv_gmacs']['t']:.1f} / {e['stylegan3_total_gmacs']['t']:.1f}, "
          f"R {e['stylegan3_conv_gmacs']['r']:.1f} / {e['stylegan3_total_gmacs']['r']:.1f}")
    print(f"ResNet50, 3 views at 224 px, forward + backward: {e['resnet50_3_views_fwd_bwd_gflops']:.1f} GFLOPs per pair\n")
    head = " | ".join(f"H100 pairs/s at {100 * u:.0f}%" for u in utils)
    print(f"| generator | synthesis GMACs/image | GFLOPs/pair (x, y + 3 views) | generator share | {head} | utilisation for 1,000 pairs/s |")
    print("|---" * (5 + len(utils)) + "|")
    for r in e["rows"]:
        rates = " | ".join(f"{r['h100_pairs_per_s'][u]:.0f}" for u in utils)
        print(f"| {r['generator']} | {r['synthesis_gmacs_per_image']:.1f} | {r['pair_gflops']:.0f} | "
              f"{100 * r['generator_share']:.0f}% | {rates} | {100 * r['utilisation_for_1000_pairs_per_s']:.0f}% |")
    rates = ", ".join(f"{v:.0f} at {100 * u:.0f}%" for u, v in e["resnet_only_h100_pairs_per_s"].items())
    print(f"\nResNet50 alone (pairs from disk, no synthesis): {rates} pairs/s on an H100.")
    print(f"The paper's ~{PAPER_PAIRS_PER_S_PER_A100} pairs/s per A100 would be "
          f"{100 * e['paper_a100_utilisation_implied']:.0f}% of an A100's bf16 peak if it included synthesis with the "
          f"paper mix (implausible), {100 * e['paper_a100_utilisation_resnet_only']:.1f}% for the ResNet50 alone "
          "(a pre-rendered 35 M-image corpus read from disk, which is how the paper reads).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(e, f, indent=2, default=str)


if __name__ == "__main__":
    main()
