"""``python -m libs.cli.sbd --sbd ... --voc ...`` (docs/data.md): DeepLab's VOC 2012 ``train_aug``
set from SBD (``benchmark.tgz``) and VOC 2012; running it again skips what is already there.
"""

import click

from ..datasets.sbd import convert_sbd
from . import command, one_line_errors


@command()
@click.option("--sbd", "sbd_root", required=True, type=click.Path(file_okay=False),
              help="SBD's benchmark_RELEASE/dataset folder (cls/, train.txt, val.txt).")
@click.option("--voc", "voc_root", required=True, type=click.Path(file_okay=False),
              help="The VOCdevkit/VOC2012 folder (JPEGImages/, SegmentationClass/, "
                   "ImageSets/); the output goes here.")
@click.option("--overwrite", is_flag=True,
              help="Replace label PNGs and a train_aug.txt that differ from the converted ones.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar.")
def main(sbd_root, voc_root, overwrite, progress):
    """Convert SBD + VOC 2012 into DeepLab's SegmentationClassAug labels and train_aug list."""
    with one_line_errors():
        result = convert_sbd(sbd_root, voc_root, overwrite=overwrite, progress=progress)
    click.echo(f"wrote {result.n_written} label PNGs to {result.label_dir} "
               f"({result.n_unchanged} already there; {result.n_labels} in all, "
               f"{result.n_from_voc} from VOC's SegmentationClass, "
               f"{result.n_labels - result.n_from_voc} from SBD)")
    state = "written" if result.list_written else "unchanged"
    click.echo(f"train_aug: {result.n_train_aug} images in {result.list_path} ({state})")


if __name__ == "__main__":
    main()
