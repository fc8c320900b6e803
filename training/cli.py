"""``jsqa-train``: the JSQA two-stage recipe from the command line.

    jsqa-train label    --out runs/labels-train --clips 2000
    jsqa-train pretrain --config small --out runs/pretrain
    jsqa-train finetune --config small --init runs/pretrain/final.ckpt \\
                        --data runs/labels-train/labels.csv --out runs/finetune
    jsqa-train evaluate runs/finetune/final.ckpt --data codec_mushra
    jsqa-train average  runs/a/final.ckpt runs/b/final.ckpt --out runs/soup.ckpt
    jsqa-train ablate   --data runs/labels-train/labels.csv --test runs/labels-test/labels.csv \\
                        --test codec_mushra --budgets 1000,all --seeds 0,1,2 --out runs/ablation

Multi-process / multi-GPU: ``torchrun --nproc_per_node N -m jsqa.training.cli pretrain ...``
(multi-node: add ``--nnodes``, ``--node_rank`` and ``--rdzv_endpoint`` as usual for torchrun).
"""

from __future__ import annotations

import argparse
import os
import sys

from jsqa.cli_args import positive_float, positive_int, real_number, whole_number

from .configs import LABEL_MIXES

os.environ.setdefault("HF_HUB_OFFLINE", "1")

non_negative_int = whole_number(0)
non_negative_float = real_number(0)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="small", help="training preset: tiny, small or paper (default small)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl, loss.png)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the batches, crops and initial weights (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt if present")
    p.add_argument("--steps", type=positive_int, help="override the preset's number of steps")
    p.add_argument("--model", help="model preset (tiny/small/paper) or JSON config file/string")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads per process")
    p.add_argument("--checkpoint-every", type=positive_int, help="steps between checkpoints")
    p.add_argument("--log-every", type=positive_int, help="steps between metrics.jsonl records")
    p.add_argument("--lr", type=positive_float, help="peak learning rate")
    p.add_argument("--warmup-steps", type=non_negative_int, help="steps of linear warm-up to --lr")


def _until_flat(p: argparse.ArgumentParser) -> None:
    p.add_argument("--until-flat", action="store_true", default=None,
                   help="stop stage 1 once its contrastive loss flattens (steps: a cap)")
    p.add_argument("--flat-window", type=positive_int, help="steps the loss is averaged over (default 200)")
    p.add_argument("--flat-patience", type=positive_int,
                   help="steps without an improvement of the averaged loss before stopping (default 500)")
    p.add_argument("--flat-delta", type=non_negative_float,
                   help="smallest relative fall of the averaged loss that counts (default 0.01: 1 %%)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jsqa-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="stage 1: contrastive pretraining on JND batches")
    _common(p)
    p.add_argument("--speech", help="clean speech folder (default: shared data, held-out talker excluded)")
    p.add_argument("--noise", help="noise folder (default: shared data, held-out recordings excluded)")
    p.add_argument("--impairments", choices=("noise", "all"), help="JND axes: noise only (paper) or all")
    p.add_argument("--jnd-db", type=positive_float, help="JND of the SNR axis in dB (default 3)")
    p.add_argument("--crop-seconds", type=positive_float, help="length of each mixture")
    p.add_argument("--groups", type=positive_int, help="groups of positives per batch")
    p.add_argument("--per-group", type=whole_number(2), help="mixtures per group")
    p.add_argument("--temperature", type=positive_float, help="SupCon temperature (default 0.1)")
    p.add_argument("--no-center", dest="center", action="store_false", default=None,
                   help="do not centre projections over the batch before normalising")
    p.add_argument("--no-generated-noise", action="store_true", help="only noise recordings")
    p.add_argument("--manifest", help="append a JSON line per batch describing every mixture drawn")
    _until_flat(p)

    p = sub.add_parser("finetune", help="stage 2: MOS fine-tuning from a checkpoint or scratch")
    _common(p)
    p.add_argument("--init", required=True, help="stage-1 checkpoint, or 'scratch'")
    p.add_argument("--data", action="append", required=True,
                   help="labelled CSV (NISQA filepath_deg,mos or path,mos); repeatable")
    p.add_argument("--limit", type=positive_int, help="use a seeded random subset of this many clips")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--crop-seconds", type=positive_float, help="training crop length (default 3 s)")
    p.add_argument("--validate-on", default=None, help="rated set or CSV to validate on (e.g. codec_mushra)")
    p.add_argument("--validate-every", type=non_negative_int)
    p.add_argument("--refresh-every", type=non_negative_int,
                   help="reload the CSVs every N batches (train while the corpus is still being labelled)")
    p.add_argument("--no-balance", dest="balance", action="store_false", default=None,
                   help="draw clips uniformly instead of evenly over the label range")
    p.add_argument("--speed-perturb", type=non_negative_float, metavar="A",
                   help="play each crop at a random speed in [1-A, 1+A] (pseudo-talkers; e.g. 0.1)")
    p.add_argument("--chunk-loss", type=non_negative_float, metavar="W",
                   help="also score each 1 s chunk alone against the clip's label, weight W (e.g. 0.5)")
    p.add_argument("--teacher-relation", type=non_negative_float, metavar="W",
                   help="also make the clips of a batch relate to one another as they do in DistillMOS's "
                        "embedding, weight W (e.g. 1.0); needs jsqa-train features run on each --data CSV")
    p.add_argument("--teacher-hint", type=non_negative_float, metavar="W",
                   help="also predict DistillMOS's embedding of each clip from the pooled embedding "
                        "through a linear head used only in training (a FitNets hint), weight W "
                        "(e.g. 0.1); needs jsqa-train features run on each --data CSV")
    p.add_argument("--pooling", metavar="MODE",
                   help="how frames are pooled: mean, or attention the network learns (which starts "
                        "as the mean, so a mean-pooled --init carries over); default: --init's own")

    p.add_argument("--label", choices=LABEL_MIXES,
                   help="mean: the CSVs' label; talker-normalised: recomputed from the teachers' columns "
                        "with DistillMOS rescaled so every talker's clean clips average the same (all "
                        "--data CSVs must come from jsqa-train label); default mean")

    p = sub.add_parser("average", help="the equal-weight mean of fine-tuned checkpoints of one network")
    p.add_argument("checkpoints", nargs="+", help="two or more .ckpt files (runs that share an ancestor)")
    p.add_argument("--out", required=True, help="checkpoint to write")

    p = sub.add_parser("label", help="build a teacher-labelled corpus (resumable: rerun to continue)")
    p.add_argument("--out", help="corpus folder (clips/, labels.csv, corpus.json); needed unless --check-dev")
    p.add_argument("--split", choices=("train", "test"), default="train",
                   help="train: training talkers/noises; test: the held-out talkers and noises")
    p.add_argument("--clips", type=positive_int, default=20000, help="clips in the corpus (default 20000)")
    p.add_argument("--seconds", type=positive_float, default=4.0, help="clip length (default 4 s)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="corpus seed: clip i is rendered from (seed, i, split) alone (default 0)")
    p.add_argument("--teachers", default="pesq_wb,distillmos",
                   help="comma-separated teachers whose mean is the label (default pesq_wb,distillmos)")
    p.add_argument("--workers", type=non_negative_int, default=2, help="labelling processes (default 2)")
    p.add_argument("--render", metavar="CSV",
                   help="re-render the clips of a labels CSV (.csv or .csv.gz) into --out, no teachers")
    p.add_argument("--speech", help="clean speech folder (default: the shared data, split by --split)")
    p.add_argument("--noise", help="noise folder (default: the shared data, split by --split)")
    p.add_argument("--check-dev", action="store_true",
                   help="only measure how each of --teachers, and their mean (the label), track the "
                        "human ratings of the dev sets with references, and exit (no --out needed)")

    p = sub.add_parser("features", help="DistillMOS's embedding of every clip of corpora, for "
                                        "finetune --teacher-relation or --teacher-hint (resumable: rerun to continue)")
    p.add_argument("data", nargs="+", help="labels.csv files made by jsqa-train label (clips rendered)")
    p.add_argument("--workers", type=positive_int, default=2, help="processes (default 2)")

    p = sub.add_parser("evaluate", help="metrics of a checkpoint or ONNX model on a labelled set")
    p.add_argument("model", help="checkpoint (.ckpt) or exported model (.onnx)")
    p.add_argument("--data", required=True, help="codec_mushra, warpq, or a CSV (NISQA or path,mos)")
    p.add_argument("--scatter", help="PNG path for the predicted-vs-true scatter (default MODEL.scatter.png)")
    p.add_argument("--json", help="write the full report as JSON here")
    p.add_argument("--attach", action="store_true",
                   help="store the overall metrics in the checkpoint's 'metrics' (exported into the ONNX metadata)")

    p = sub.add_parser("ablate", help="scratch vs noise-JND vs all-family-JND pretraining: budgets x seeds, "
                                      "resumable, then the table and plots")
    p.add_argument("--out", required=True, help="ablation folder (rerun the same command to continue)")
    p.add_argument("--config", default="small")
    p.add_argument("--data", action="append", help="labelled training CSV; repeatable")
    p.add_argument("--test", action="append",
                   help="test set: a CSV (also reported per condition) or p835_refcond, codec_mushra, warpq; "
                        "repeatable")
    p.add_argument("--budgets", default="1000,all", help="labelled clips per run, comma-separated; 'all' = every clip")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default="scratch,jsqa-noise,jsqa-all")
    p.add_argument("--pretrained-noise", help="stage-1 checkpoint from noise-only JND pairs "
                                              "(default: pretrain it in OUT/pretrain-noise)")
    p.add_argument("--pretrained-all", help="stage-1 checkpoint from all-family JND pairs "
                                            "(default: pretrain it in OUT/pretrain-all)")
    p.add_argument("--pretrain-steps", type=positive_int, help="stage-1 steps (the cap, with --until-flat)")
    _until_flat(p)
    p.add_argument("--steps", type=positive_int, help="fine-tuning steps per run")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float, help="peak fine-tuning learning rate")
    p.add_argument("--warmup-steps", type=non_negative_int)
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--checkpoint-every", type=positive_int)
    p.add_argument("--validate-on", help="rated set or CSV for the fine-tuning validation curves")
    p.add_argument("--validate-every", type=non_negative_int)
    p.add_argument("--report", action="store_true", help="only write the report of the finished runs")
    return parser


def _config(args):
    from .configs import get_preset

    cfg = get_preset(args.config)
    changes = {k: getattr(args, k, None) for k in (
        "model", "threads", "checkpoint_every", "log_every", "warmup_steps", "impairments", "jnd_db",
        "groups", "per_group", "temperature", "center", "batch_size", "validate_every", "refresh_every",
        "balance", "speed_perturb", "chunk_loss", "teacher_relation", "teacher_hint", "pooling", "label", "until_flat", "flat_window", "flat_patience", "flat_delta")}
    if args.command == "pretrain":
        changes.update(pretrain_steps=args.steps, pretrain_lr=args.lr, crop_seconds=args.crop_seconds)
    elif args.command in ("finetune", "ablate"):
        changes.update(finetune_steps=args.steps, finetune_lr=getattr(args, "lr", None),
                       finetune_crop_seconds=getattr(args, "crop_seconds", None),
                       pretrain_steps=getattr(args, "pretrain_steps", None))
    return cfg.override(**changes)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"jsqa-train {args.command}: error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from rich.console import Console

    console = Console()
    if args.command == "pretrain":
        from .datasets import GENERATED_NOISES
        from .pretrain import pretrain

        path = pretrain(args.out, _config(args), args.speech, args.noise,
                        () if args.no_generated_noise else GENERATED_NOISES, args.seed, args.resume,
                        args.manifest)
        console.print(f"pretrained checkpoint: {path}")
    elif args.command == "finetune":
        from .finetune import finetune

        if args.init != "scratch" and not os.path.isfile(args.init):
            raise FileNotFoundError(f"--init {args.init}: no such checkpoint (or use --init scratch)")
        path = finetune(args.out, _config(args), args.data, args.init, args.seed, args.limit,
                        args.resume, args.validate_on)
        console.print(f"fine-tuned checkpoint: {path}")
    elif args.command == "average":
        from .average import average_checkpoints

        console.print(f"averaged checkpoint: {average_checkpoints(args.checkpoints, args.out)}")
    elif args.command == "label":
        from .labels import CorpusSpec, build_corpus, rerender

        if args.check_dev:
            from .dev_check import check_dev

            _print_dev_check(console, check_dev(teacher_names=_names(args.teachers)))
            return 0
        if not args.out:
            raise ValueError("--out is required: the corpus folder to write (or resume)")
        spec = CorpusSpec(split=args.split, n_clips=args.clips, seconds=args.seconds, seed=args.seed)
        if args.render:
            path = rerender(args.render, args.out, spec, args.speech, args.noise)
        else:
            path = build_corpus(args.out, spec, args.speech, args.noise,
                                _names(args.teachers), args.workers)
        console.print(f"labels: {path}")
    elif args.command == "features":
        from .teacher_features import extract

        for data in args.data:
            console.print(f"DistillMOS embeddings: {extract(data, args.workers)}")
    elif args.command == "evaluate":
        from pathlib import Path

        from .datasets import read_rated
        from .evaluate import evaluate_path, format_report, save_json, scatter_png

        if not os.path.isfile(args.model):
            raise FileNotFoundError(f"{args.model}: no such model file")
        items = read_rated(args.data)
        rep, pred = evaluate_path(args.model, items)
        name = Path(args.data).parent.name if args.data.endswith(".csv") else args.data
        console.print(format_report(rep, name), highlight=False)
        png = args.scatter or str(Path(args.model).with_suffix("")) + f".{name}.scatter.png"
        scatter_png(pred, items, png, f"{Path(args.model).name} on {name}")
        console.print(f"scatter: {png}")
        if args.json:
            save_json(rep, args.json)
        if args.attach:
            from .evaluate import attach_metrics

            attach_metrics(args.model, name, rep["overall"])
            console.print(f"metrics for {name} stored in {args.model}")
    elif args.command == "ablate":
        from .ablate import parse_budgets, run_ablation
        from .ablate_report import write_report

        if not args.report:
            missing = [f for f, v in (("--data", args.data), ("--test", args.test)) if not v]
            if missing:
                raise ValueError(f"missing {', '.join(missing)} (or use --report to report finished runs)")
            run_ablation(args.out, _config(args), args.data, args.test, parse_budgets(args.budgets),
                         [int(s) for s in args.seeds.split(",")], tuple(a.strip() for a in args.arms.split(",")),
                         {"noise": args.pretrained_noise, "all": args.pretrained_all}, args.validate_on)
        console.print(write_report(args.out), highlight=False, markup=False, soft_wrap=True)
    return 0


def _names(teachers: str) -> list[str]:
    return [t.strip() for t in teachers.split(",") if t.strip()]


def _print_dev_check(console, report: dict) -> None:
    from rich.table import Column, Table

    table = Table(Column("dev set", no_wrap=True), "scores", "n", "Pearson", "Spearman", "RMSE raw",
                  "mean / listeners", title="teachers and their mean (the label) against listeners")
    for name, rows in report.items():
        for key, r in rows.items():
            table.add_row(name, key, str(r["n"]), f"{r['pearson']:.3f}", f"{r['spearman']:.3f}",
                          f"{r['rmse_raw']:.3f}", f"{r['mean']:.2f} / {r['true_mean']:.2f}")
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
