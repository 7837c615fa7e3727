"""Named sweeps and their reports.

    python sweep.py list
    python sweep.py run NAME [--report] [--baseline SPEC] [HYDRA_OVERRIDES...]
    python sweep.py report DIR [--baseline SPEC] [--no-wandb] [--wandb-project P] [--wandb-mode M]

`run` is `python train.py --multirun +sweep=NAME HYDRA_OVERRIDES` (ser/conf/sweep/NAME.yaml);
the launcher is chosen as usual, e.g. hydra/launcher=parallel or hydra/launcher=slurm.
`report` gathers every results.json under DIR into report.md, report.csv and report.png
in DIR and logs the table to W&B (offline unless WANDB_MODE or --wandb-mode says so).
See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ser.errors import InputError


def report_options(parser: argparse.ArgumentParser) -> None:
    from ser.sweeps.report import PAPER_BASELINE

    parser.add_argument(
        "--baseline", default=PAPER_BASELINE,
        help="the row to compare with: its label, its variant, or KEY=VALUE conditions its "
        "runs meet (group choices like model/se=on or config keys like model.net.num_blocks=10); "
        f"default: the paper's MS-SENet ({PAPER_BASELINE})",
    )
    parser.add_argument("--no-wandb", action="store_true", help="do not log the table to W&B")
    parser.add_argument("--wandb-project", default="ser")
    parser.add_argument("--wandb-mode", default=os.environ.get("WANDB_MODE", "offline"),
                        choices=("offline", "online", "disabled"))


def report(directory: Path, args: argparse.Namespace) -> int:
    from ser.sweeps.report import REPORT_MARKDOWN, write_report

    write_report(
        directory, baseline=args.baseline,
        wandb_project=None if args.no_wandb else args.wandb_project, wandb_mode=args.wandb_mode,
    )
    print((Path(directory) / REPORT_MARKDOWN).read_text())
    print(f"wrote report.md, report.csv and report.png in {Path(directory).resolve()}")
    return 0


def main(argv: list[str]) -> int:
    from ser.sweeps.launch import available_sweeps, run_sweep

    if not argv or argv[0] in ("-h", "--help") or argv[0] not in ("list", "run", "report"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    if command == "list":
        for name, description in available_sweeps().items():
            print(f"{name:10s} {description}")
        return 0
    if command == "run":
        parser = argparse.ArgumentParser(prog="sweep.py run")
        parser.add_argument("name", choices=sorted(available_sweeps()))
        parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job")
        parser.add_argument("--report", action="store_true", help="report the sweep when it ends")
        report_options(parser)
        args = parser.parse_intermixed_args(rest)
        try:
            code, sweep_dir = run_sweep(args.name, args.overrides)
        except InputError as error:  # an unknown sweep, or a sweeper or launcher of an extra not installed
            print(f"error: {error}", file=sys.stderr)
            return 2
        if code != 0 or not args.report:
            if sweep_dir is not None:
                print(f"sweep directory: {sweep_dir}\nreport: python sweep.py report {sweep_dir}")
            return code
        if sweep_dir is None:
            print("error: the sweep did not say where it wrote", file=sys.stderr)
            return 2
        return report(sweep_dir, args)
    parser = argparse.ArgumentParser(prog="sweep.py report")
    parser.add_argument("directory", type=Path)
    report_options(parser)
    args = parser.parse_intermixed_args(rest)
    try:
        return report(args.directory, args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run() -> None:
    """`python sweep.py ARGS` / `python -m ser.sweeps ARGS`."""
    sys.exit(main(sys.argv[1:]))
