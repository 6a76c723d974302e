"""bench/gpu.py's result as a Markdown block, and replacing that block in a RESULTS.md."""

from __future__ import annotations

import re
from typing import Any


def _start(slug: str) -> str:
    return f"<!-- bench/gpu.sh {slug}: generated, do not edit by hand -->"


def _end(slug: str) -> str:
    return f"<!-- /bench/gpu.sh {slug} -->"


def replace_block(text: str, slug: str, block: str) -> str:
    """`text` with the card's marked block replaced by `block`, or with it appended when there is none."""
    marked = f"{_start(slug)}\n{block.rstrip()}\n{_end(slug)}\n"
    pattern = re.compile(re.escape(_start(slug)) + r".*?" + re.escape(_end(slug)) + r"\n?", re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _match: marked, text, count=1)
    return (text.rstrip() + "\n\n" if text.strip() else "") + marked


def markdown(result: dict[str, Any], json_name: str) -> str:
    """The tables: reconstruction (ours vs the original's loop), identity, training, scoring."""
    card, peak = result["card"], result["conv_peak"]["tflops_bf16"]
    archs = result["architectures"]
    names = [name for name in archs if name != "identical"]
    title = card["name"] if result["mode"] == "gpu" else "CPU, tiny sizes (the test of the script, not a benchmark)"
    lines = [f"## GPU: {title} (`bench/gpu.sh`, {result['date']})", "",
             f"torch {card['torch']}, CUDA {card['cuda']}, cuDNN {card['cudnn']}, diffusers {card['diffusers']}; fp32 "
             f"convolutions {'may use TF32 (cuDNN default)' if card['cudnn_allow_tf32'] else 'in full fp32'}; "
             f"raw numbers in `{json_name}`; the whole run took {result['seconds']['spent']:.0f} s. "
             f"Dense bf16 3×3 conv (channels_last, best of {len(result['conv_peak']['shapes'])} shapes): "
             f"**{peak:.3g} TFLOP/s**, the reference for the fractions below.", ""]
    for name in names:
        flops = ", ".join(f"{side}²: {value:.3g} TFLOP" for side, value in archs[name]["tflop_per_image"].items())
        lines.append(f"* `{name}`: {archs[name]['parameters']:,} parameters; one encode + decode {flops}")
    lines.append("* the two architectures are **identical** (same modules and parameter count), so they cost the "
                 "same and are measured once" if archs["identical"] else "* the two architectures differ; each is "
                 "measured")
    lines += ["", "| autoencoder | side | dtype | batch | images | img/s | TFLOP/s | of bf16 peak | OOM splits |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["reconstruction"]:
        lines.append(f"| {row['architecture']} | {row['side']}² | {row['dtype']} | {row['batch']} | {row['images']} | "
                     f"{row['images_per_second']:.1f} | {row['tflops']:.3g} | {row['fraction_of_bf16_peak']:.1%} | "
                     f"{row['oom_splits']} |")
    lines += ["", "The original's loop (DataLoader batch 64 of equal-size JPEGs, 2 workers, fp32, encode → posterior "
              "sample → decode, ToPILImage, synchronous PIL PNG saves) in the same run:", "",
              "| autoencoder | side | batch | images | img/s | of bf16 peak | ours fp32 same batch / it "
              "| ours best / it |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["original_loop"]:
        same = [r for r in result["reconstruction"] if r["side"] == row["side"] and r["dtype"] == "fp32"
                and r["batch"] == row["batch"]]
        best = max(r["images_per_second"] for r in result["reconstruction"] if r["side"] == row["side"])
        ratio = f"{same[0]['images_per_second'] / row['images_per_second']:.2f}×" if same else "–"
        lines.append(f"| {row['architecture']} | {row['side']}² | {row['batch']} | {row['images']} | "
                     f"{row['images_per_second']:.1f} | {row['fraction_of_bf16_peak']:.1%} | {ratio} | "
                     f"{best / row['images_per_second']:.2f}× |")
    same = result["per_image_identity"]
    lines += ["", f"`forward: per_image` PNG bytes across batch sizes {same['batch_sizes']} ({same['images']} images, "
              f"{same['side']}², fp32): **{'identical' if same['per_image_identical'] else 'DIFFERENT'}** "
              f"({same['per_image_differing_images']} differing file(s)); `forward: batched` for comparison: the "
              f"pixels of {same['batched_differing_images']} image(s) differ from batch {same['batch_sizes'][0]}.", "",
              "| res50nodown training | deterministic | batch × crop² | img/s | ms/step |",
              "| --- | --- | --- | --- | --- |"]
    for row in result["training"] + result["training_deterministic"]:
        where = "child process" if row in result["training_deterministic"] else "main process"
        lines.append(f"| {row['precision']}, channels_last ({where}) | {row['deterministic']} | {row['batch']} × "
                     f"{row['crop']}² | {row['images_per_second']:.1f} | {row['step_ms']:.1f} |")
    for row in result["training_roundtrip"]:
        plain = [r for r in result["training"] if r["precision"] == row["precision"]]
        ratio = f", {plain[0]['images_per_second'] / row['images_per_second']:.2f}× the step of `none`" if plain else ""
        lines.append(f"| {row['precision']}, channels_last, `input_filter: roundtrip` (SD VAE architecture, random "
                     f"weights{ratio}) | {row['deterministic']} | {row['batch']} × {row['crop']}² | "
                     f"{row['images_per_second']:.1f} | {row['step_ms']:.1f} |")
    for precision in sorted({row["precision"] for row in result["training_deterministic"]}):
        pair = {row["deterministic"]: row for row in result["training_deterministic"] if row["precision"] == precision}
        if set(pair) == {False, True}:
            lines.append(f"\n`train.deterministic: true` costs {precision}: "
                         f"{pair[False]['images_per_second'] / pair[True]['images_per_second']:.2f}× the step time "
                         "(same process, same cuBLAS workspace setting).")
    lines += ["", "| res50nodown full-image scoring | images | img/s |", "| --- | --- | --- |"]
    for row in result["scoring"]:
        lines.append(f"| `scoring.batch_size: {row['batch']}` (same-size batches) | {row['images']} | "
                     f"{row['images_per_second']:.1f} |")
    return "\n".join(lines) + "\n"
