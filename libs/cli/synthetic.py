"""``python -m libs.cli.synthetic --root ...`` (docs/data.md): write the synthetic dataset by hand
(scripts with ``DATASET.SYNTHETIC`` do it on first use).
"""

import click

from ..datasets.synthetic import DEFAULT_LAYOUT, LAYOUTS, Sizes, generate_synthetic
from . import command, one_line_errors


@command()
@click.option("--root", required=True, type=click.Path(), help="Directory to create.")
@click.option("--n-train", required=True, type=click.IntRange(min=1), help="Training images.")
@click.option("--n-test", required=True, type=click.IntRange(min=1), help="Test images.")
@click.option("--height", required=True, type=click.IntRange(min=8), help="Image height.")
@click.option("--width", required=True, type=click.IntRange(min=8), help="Image width.")
@click.option("--seed", required=True, type=int, help="Same seed, same bytes.")
@click.option("--layout", type=click.Choice(list(LAYOUTS)), default=DEFAULT_LAYOUT,
              show_default=True,
              help="On-disk format: COCO-Stuff 10k, VOC 2012 + SBD, or the generic folder one.")
@click.option("--force", is_flag=True,
              help="Replace an existing synthetic set at --root (never any other folder).")
def main(root, n_train, n_test, height, width, seed, layout, force):
    """Generate a synthetic dataset (8 classes) in a real dataset's on-disk layout."""
    with one_line_errors():
        try:
            generate_synthetic(root, Sizes(n_train, n_test, height, width), seed, layout, force)
        except OSError as e:
            raise click.ClickException(f"{root}: cannot write ({e.strerror})") from None
    click.echo(f"wrote {n_train} train + {n_test} test images to {root} ({layout} layout)")


if __name__ == "__main__":
    main()
