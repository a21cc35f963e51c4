"""``cellseg project``: create a project (an SQLite file) for a folder of images."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "create or inspect a review project (an SQLite file the app opens)"
DESCRIPTION = """\
Create a project for the images in IMAGES_DIR, optionally starting from the annotations of a
COCO JSON file (its file_names resolve against IMAGES_DIR) and listing the models to run:

  cellseg project create IMAGES_DIR --out PROJECT [--import COCO_JSON] [--model CONFIG WEIGHTS]...
  cellseg project info PROJECT

The app and `cellseg export` read and write the same project file.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    create = sub.add_parser("create", help="make a new project for a folder of images")
    create.add_argument("images_dir", metavar="IMAGES_DIR", type=Path)
    create.add_argument("--out", required=True, type=Path, metavar="PROJECT",
                        help="project file to write (e.g. IMAGES_DIR/project.cellseg)")
    create.add_argument("--import", dest="coco", type=Path, metavar="COCO_JSON",
                        help="start from this COCO file's annotations")
    create.add_argument("--model", nargs=2, action="append", default=[],
                        metavar=("CONFIG", "WEIGHTS"), help="a model to use (repeatable)")
    create.add_argument("--force", action="store_true", help="replace an existing project file")
    info = sub.add_parser("info", help="print a project's images and review counts")
    info.add_argument("project", metavar="PROJECT", type=Path)


def run(args: argparse.Namespace) -> int:
    from ..project.exchange import create_project
    from ..project.store import ProjectStore

    if args.action == "create":
        summary = create_project(args.images_dir, args.out, args.coco,
                                 [tuple(m) for m in args.model], overwrite=args.force)
        print(f"created {args.out}: {summary.images_added} images, {summary.instances} "
              f"instances, categories: {', '.join(summary.categories)}")
        return 0
    with ProjectStore.open(args.project, read_only=True) as store:
        counts = store.counts()
        images = store.images()
        print(f"{args.project}: {len(images)} images "
              f"({sum(i.reviewed for i in images)} reviewed), images in {store.images_dir}")
        print(f"{'id':>6}  {'reviewed':8}  {'inst':>5}  {'accepted':>8}  {'edited':>6}  "
              f"{'drawn':>5}  {'deleted':>7}  file")
        for im in images:
            c = counts.get(im.id)
            vals = (0,) * 5 if c is None else (c.instances, c.accepted, c.edited, c.drawn,
                                               c.deleted)
            print(f"{im.id:>6}  {'yes' if im.reviewed else 'no':8}  {vals[0]:>5}  {vals[1]:>8}  "
                  f"{vals[2]:>6}  {vals[3]:>5}  {vals[4]:>7}  {im.file_name}")
    return 0
