"""Rebuild reports/fer2013/README.md from the JSON files in that folder (no training).

    python pipelines/report_fer2013.py [--report reports/fer2013]

Reads results.json (`make pretrain`), speed.json (benchmarks/pretrain_speed.py) and
ablation/*.json (pipelines/ablate_pretrain.py); see fer_tf/research/pretrain_report.py.
"""

import argparse

from _common import REPO, run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", default=REPO / "reports" / "fer2013")
    args = parser.parse_args()
    from fer_tf.research.pretrain_report import write_readme

    print(f"wrote {write_readme(args.report)}")


if __name__ == "__main__":
    run(main)
