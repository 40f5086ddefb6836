"""``python -m libs.cli.check --config ...`` (docs/data.md): check a dataset before training on it.
Every file is read once, as training reads it; a bad file is listed with its reason instead of
stopping the scan, so one run names them all (exit status 1).
"""

import click

from ..datasets.check import DEFAULT_SPLITS, check_config, format_report
from . import command, config_option, load_cli_config, one_line_errors


@command()
@config_option(help="YAML config whose DATASET section to check, e.g. config/voc12.yaml.")
@click.option("-s", "--split", "splits", multiple=True,
              help="Split to check: train, test (DATASET.SPLIT) or a literal name such as "
                   "train_aug; repeat for several.  [default: train and test]")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar per split.")
def main(config_path, splits, progress):
    """Read every sample of the dataset's splits and report sizes, classes and bad files."""
    with one_line_errors(config_path):
        cfg = load_cli_config(config_path)
        class_names, reports = check_config(cfg, splits or DEFAULT_SPLITS, progress)
    click.echo(format_report(class_names, reports))
    if not all(report.ok for report in reports):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
