"""Rebuild reports/shipped/trials/README.md from its trials' results (no training).

    python pipelines/report_ship_trials.py [--trials reports/shipped/trials]

A trial is a full `make ship` run with other options, reported beside the shipped model, e.g.

    python pipelines/ship.py --set train.distill_from=... --report reports/shipped/trials/NAME \\
        --output runs/ship-trials/NAME --saved-models runs/ship-trials/NAME/saved_models

(its model stays out of saved_models/); ``baseline``, the committed recipe rerun the same way, is
what the others are measured against. See fer_tf/research/ship_report.py.
"""

import argparse

from _common import REPO, run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", default=REPO / "reports" / "shipped" / "trials")
    parser.add_argument("--shipped", default=REPO / "reports" / "shipped" / "results.json")
    args = parser.parse_args()
    from fer_tf.research.ship_report import write_trials_readme

    print(f"wrote {write_trials_readme(args.trials, args.shipped)}")


if __name__ == "__main__":
    run(main)
