"""Train nanostyle's StyleGAN2 on 2-D brain MRI slices.

    python examples/train_oasis.py --res 64                       # default data: MNI152 slices
    python examples/train_oasis.py --data keras_png_slices_train --res 64 --kimg 200
    python examples/train_oasis.py --resume runs/RUN --kimg 400   # continue a run exactly
    mpiexec -n 2 python examples/train_oasis.py --res 64          # data-parallel over 2 processes
    python examples/train_oasis.py --data DIR --classes AD,NC --cond   # one model, sampled per class

Ctrl-C (SIGINT) or `kill` (SIGTERM) stops a run at the end of the current iteration, with a final
snapshot, and prints the --resume line that continues it.

With no options on a CPU it picks the narrow 'cpu' networks and a length that gives visible
brains in about an hour, and prints what it chose.
"""
import argparse

import _common  # noqa: F401  (import path + error handling)
from _common import friendly_errors
from nanostyle.train import RESUME_OVERRIDES


def _parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="folder of PNG/JPG slices (searched recursively), a NIfTI/Analyze volume, or a "
                                  "folder of volumes (default: the shipped MNI152 slices)")
    p.add_argument("--axis", choices=["axial", "coronal", "sagittal"], default="axial",
                   help="volumes: the axis to slice along, after turning them to RAS (default axial)")
    p.add_argument("--res", type=int, default=64,
                   help="image resolution, a power of two (default 64; 128 and 256 take StyleGAN2-ADA's settings "
                        "for them; the default data is 128x128)")
    p.add_argument("--kimg", type=float, help="length in thousands of real images shown to D (default 100 with the "
                                              "cpu networks, where --minutes usually ends it first; 5000 otherwise)")
    p.add_argument("--minutes", type=float,
                   help="wall-clock budget of the training loop: when it is reached the run ends with a final "
                        "snapshot and metrics (default 55 on the CPU, so the default run fits an hour; 0 = none)")
    p.add_argument("--batch", type=int, help="minibatch size, the whole batch over all processes (default 16; with "
                                             "--cfg auto from 128 px StyleGAN2-ADA's min(4096 / res, 32))")
    p.add_argument("--seed", type=int, default=0, help="seed of the networks' weights and of every random draw of "
                                                       "the run (default 0)")
    p.add_argument("--out", help="run folder (default runs/<time>-res<res>)")
    p.add_argument("--resume", metavar="RUN",
                   help="continue RUN to --kimg: its folder (from its newest checkpoint that loads) or a checkpoint; "
                        "takes --kimg, --minutes, --device, --keep, --dist, and --lr and --gamma (say, after a "
                        "divergence) (default: start a new run)")
    p.add_argument("--gamma", type=float, help="R1 weight (default 0.1 at res <= 64; above, StyleGAN2-ADA's "
                                                "0.0002 * res^2 / batch)")
    p.add_argument("--lr", type=float, help="Adam learning rate of G and D (default 0.004 with the cpu "
                                            "networks, 0.0025 as StyleGAN2 otherwise)")
    p.add_argument("--diversity", type=float, metavar="WEIGHT",
                   help="weight of the diversity floor against mode collapse (default 4; 0 with --cfg bench64; "
                        "0 = plain StyleGAN2 loss)")
    p.add_argument("--diversity-until", type=float, metavar="KIMG",
                   help="the floor pushes only in the first KIMG kimg, while collapse threatens (default 40; "
                        "0 = the whole run)")
    p.add_argument("--diversity-gate", type=float, default=0.0, metavar="KIMG",
                   help="let the floor push only while a running mean (half-life KIMG) of the samples' "
                        "pair distance is below the data's, not whenever one batch is (default 0: per batch)")
    p.add_argument("--diversity-space", choices=["pixels", "gradients"], default="pixels",
                   help="the floor's distance between samples: RMS of the pixels (default) or of the image "
                        "gradients, which brightness and background level do not change")
    p.add_argument("--aug", choices=["ada", "noaug"], default="ada",
                   help="augmentation of D's inputs: ada (adaptive, against D overfitting few images) or noaug "
                        "(default ada)")
    p.add_argument("--aug-pivot", choices=["mean", "black"], default="mean",
                   help="ADA's brightness and contrast about the image mean (as ADA) or about black, which "
                        "keeps the MRI background at -1 (weaker: D overfitted with it in the cpu run) (default mean)")
    p.add_argument("--cfg", choices=["auto", "bench64", "cpu", "tiny"],
                   help="network config: auto (StyleGAN2-ADA's widths), bench64 (the speed yardstick), cpu "
                        "(narrow, for a CPU hour), tiny (a few channels, for tests); default: cpu on a CPU, "
                        "auto with a GPU")
    p.add_argument("--classes", help="comma-separated subfolders to use as classes, e.g. AD,NC, or '*' for every "
                                     "subfolder (default: every image, no classes)")
    p.add_argument("--cond", action="store_true",
                   help="train a conditional StyleGAN2 on the class labels of --classes (or of every subfolder "
                        "when --classes is not given); sample a class with sample.py --class NAME (default: off)")
    p.add_argument("--snap", type=float, help="snapshot interval in kimg (default 2 with the cpu networks, 50 "
                                              "otherwise)")
    p.add_argument("--keep", type=int, metavar="N",
                   help="keep the newest N ckpt-*.npz snapshots besides latest.npz (default 5; 0 = latest.npz "
                        "only); the plan line says the disk this takes")
    p.add_argument("--metrics", type=float, help="metrics interval in kimg, 0 = off (default: every second "
                                                 "snapshot with the cpu networks, every snapshot otherwise)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when a GPU answers")
    p.add_argument("--dist", choices=["none", "mpi", "nccl"],
                   help="how processes started by mpiexec share each batch (default: nccl when every process has a "
                        "GPU of its own, else mpi; none for one process); --batch stays the whole batch")
    return p


def parse_args(argv=None):
    return _parser().parse_args(argv)


# what a resumed run takes (the rest is in its checkpoint): RESUME_OVERRIDES by their flags' names
RESUME_OPTIONS = {"resume", "dist", *(("lr" if key in ("lr_G", "lr_D") else key) for key in RESUME_OVERRIDES)}


def given_options(argv=None):
    """The options named on the command line (not those left at their defaults)."""
    p, unset = _parser(), object()
    # a namespace that already holds every option keeps argparse from filling in defaults
    args = p.parse_args(argv, argparse.Namespace(**{dest: unset for dest in vars(p.parse_args([]))}))
    return {dest for dest, value in vars(args).items() if value is not unset}


@friendly_errors
def main(argv=None):
    from nanostyle import distributed
    args = parse_args(argv)
    comm = distributed.init(args.dist, args.device)    # a wrong launch: one line, before any work
    with comm.fail_together():       # one rank's failure ends every rank
        _train(args, argv, comm)


def _train(args, argv, comm):
    from nanostyle.diversity import DiversityConfig
    from nanostyle.train import TrainConfig, train
    if args.resume:
        ignored = sorted(given_options(argv) - RESUME_OPTIONS)
        if ignored:
            flags = ", ".join("--" + dest.replace("_", "-") for dest in ignored)
            them = "it" if len(ignored) == 1 else "them"
            taken = ", ".join("--" + dest for dest in sorted(RESUME_OPTIONS - {"resume"}))
            raise ValueError(f"--resume continues a run with the settings in its checkpoint, so {flags} would be "
                             f"ignored; drop {them} (a resumed run takes only {taken}), "
                             f"or start a new run without --resume to use {them}")
        train(TrainConfig(kimg=args.kimg, minutes=args.minutes, device=args.device, keep=args.keep,
                          lr_G=args.lr, lr_D=args.lr, gamma=args.gamma), resume=args.resume, comm=comm)
        return
    config = TrainConfig(data=args.data, res=args.res, kimg=args.kimg, minutes=args.minutes, batch=args.batch, seed=args.seed,
                         out=args.out, gamma=args.gamma, aug=args.aug, cfg=args.cfg, classes=args.classes, axis=args.axis,
                         snap_kimg=args.snap, metrics_kimg=args.metrics, device=args.device, keep=args.keep,
                         diversity=DiversityConfig(weight=args.diversity, until_kimg=args.diversity_until,
                                                   gate_kimg=args.diversity_gate, space=args.diversity_space),
                         ada_pivot=args.aug_pivot, lr_G=args.lr, lr_D=args.lr)
    config.cond = args.cond
    train(config, comm=comm)


if __name__ == "__main__":
    main()
