"""DVC stage `reconstruct`: every real image through the autoencoder into data/fake/<split>/<stem>.png (or .jpg).

Resumable (finished fakes are kept). On several GPUs or machines: `torchrun --nproc_per_node=N
stages/reconstruct.py`; each rank takes every N-th batch, rank 0 then checks everything and writes metrics.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library, also in exp runs

from aligned_forensics.autoencoder.reconstruct import (  # noqa: E402
    ReconstructConfig,
    Shard,
    reconstructed_pairs,
    run_reconstruct,
)
from aligned_forensics.common.cli import load_config, run_stage, stage_parser  # noqa: E402
from aligned_forensics.common.distributed import (
    finish_distributed,
    init_distributed,
    launched_by_torchrun,
    sum_over_ranks,
)
from aligned_forensics.common.figures import write_pairs_png  # noqa: E402
from aligned_forensics.common.io import pick, write_metrics  # noqa: E402

PAIRS_SHOWN = 6


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--index", type=Path, default=Path("data/fetch/index.csv"))
    parser.add_argument("--autoencoder", type=Path, default=Path("data/autoencoder"))
    parser.add_argument("--out", type=Path, default=Path("data/fake"))
    parser.add_argument("--rejects", type=Path, default=Path("data/reconstruct/rejects.csv"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/reconstruct.json"))
    parser.add_argument("--pairs", type=Path, default=Path("metrics/reconstruct/pairs.png"))

    def body(args) -> str:
        config = load_config(args.params, "reconstruct", ReconstructConfig)
        paths = {"index_path": args.index, "autoencoder_dir": args.autoencoder, "out_dir": args.out}
        started, device, sharded_now = time.perf_counter(), None, 0
        if launched_by_torchrun():
            rank, world, device = init_distributed(config.device)
            shard_stats = run_reconstruct(config, **paths, rejects_path=None, shard=Shard(rank, world), device=device)
            sharded_now = sum_over_ranks(shard_stats["reconstructed_now"], device)
            finish_distributed()
            if rank != 0:
                return f"rank {rank}: {shard_stats['reconstructed_now']:,} images reconstructed"
        stats = run_reconstruct(config, **paths, rejects_path=args.rejects, device=device)  # rank 0 checks all
        stats["seconds"] = time.perf_counter() - started
        stats["reconstructed_now"] += sharded_now
        stats["resumed"] -= sharded_now
        stats["images_per_second"] = stats["reconstructed_now"] / stats["seconds"]
        write_pairs_png(args.pairs, reconstructed_pairs(args.index, args.out, count=PAIRS_SHOWN))
        write_metrics(args.metrics, stats, declared=pick(stats, "psnr_mean", "psnr_min", "rejected"))
        return (f"{stats['images']:,} images ({stats['reconstructed_now']:,} reconstructed now, {stats['resumed']:,} "
                f"kept from an earlier run, {stats['rejected']:,} rejected), {stats['images_per_second']:.1f} img/s, "
                f"PSNR mean {stats['psnr_mean']:.2f} dB")

    return run_stage("reconstruct", parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
