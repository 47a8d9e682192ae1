"""``medcl data``: converters from published data sets' downloads to medcl Parquet manifests.

    medcl data list                                   # the data sets and their expected layouts
    medcl data prepare NAME --from DOWNLOAD_DIR --out DIR [--seed 0] [--strict]
                      [--multi-label first|rarest|explode|single] [--split publisher|patient-seeded]
                      [--embed [--max-side N]]
"""
from __future__ import annotations

from medcl.paths import cli_path


def register(subparsers) -> None:
    group = subparsers.add_parser("data", help="prepare published data sets (MGTIL) as Parquet manifests")
    commands = group.add_subparsers(dest="data_command", required=True)
    listing = commands.add_parser("list", help="the data sets medcl can prepare, with their expected layouts")
    listing.set_defaults(handler=_list)
    prepare = commands.add_parser("prepare", help="a download folder -> DIR/NAME.parquet + DIR/NAME.json")
    prepare.add_argument("name", help="data set name (medcl data list)")
    prepare.add_argument("--from", dest="source", type=cli_path, required=True,
                         help="the folder the publisher's archive was extracted into")
    prepare.add_argument("--out", type=cli_path, required=True, help="folder for NAME.parquet and NAME.json")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the patient-level split (default: 0)")
    prepare.add_argument("--strict", action="store_true",
                         help="fail on the first missing image or unknown label instead of skipping and counting")
    prepare.add_argument("--multi-label", default=None, choices=["first", "rarest", "explode", "single"],
                         help="images with several labels: the first in class order, the label with the fewest rows "
                              "overall, one row per label, or left out (default: the data set's; medcl data list)")
    prepare.add_argument("--split", default="publisher", choices=["publisher", "patient-seeded"],
                         help="the publisher's split where there is one (default), or a seeded patient-level split "
                              "70/10/20 whatever the publisher gives (e.g. an NIH copy without test_list.txt)")
    prepare.add_argument("--embed", action="store_true",
                         help="store the image bytes in the manifest (portable to a cluster) instead of paths")
    prepare.add_argument("--max-side", type=int, default=None,
                         help="with --embed: resize so the longest side is at most this many pixels (PNG)")
    prepare.set_defaults(handler=_prepare)


def _spec(name: str):
    from medcl.data.prepare import DATASETS
    from medcl.data.spec import DataError
    from medcl.registry import close_match_hint

    if name not in DATASETS:
        raise DataError("data prepare NAME", f"unknown data set {name!r}{close_match_hint(name, sorted(DATASETS))}; "
                                             f"allowed: {', '.join(DATASETS)}")
    return DATASETS[name]


def _list(args) -> int:
    from medcl.data.prepare import SPECS

    for spec in SPECS:
        classes = f"{len(spec.classes)} classes" if spec.classes else "classes from the data"
        print(f"{spec.name:11s} {spec.modality:11s} {classes:22s} {spec.title}\n    {spec.source}")
        print("    " + spec.layout.replace("\n", "\n    "))
        if spec.note:
            print(f"    note: {spec.note}")
    return 0


def _prepare(args) -> int:
    from medcl.data.prepare import prepare

    summary = prepare(_spec(args.name), args.source, args.out, seed=args.seed, strict=args.strict,
                      policy=args.multi_label, embed=args.embed, max_side=args.max_side, split=args.split)
    counts = {s: sum(c.values()) for s, c in summary["counts"].items()}
    skipped = sum(summary["skipped"].values())
    print(f"{summary['dataset']}: {summary['rows']} rows (train {counts['train']}, val {counts['val']}, "
          f"test {counts['test']}), {len(summary['classes'])} classes, {skipped} skipped "
          f"{summary['skipped'] or ''}".rstrip())
    if summary["empty_classes"]:
        empty = summary["empty_classes"]
        print(f"warning: {len(empty)} class{'es' if len(empty) > 1 else ''} with no row: {empty} "
              f"(multi-label rule {summary['multi_label']!r})")
    if summary["note"]:
        print(f"note: {summary['note']}")
    chosen = f" (--split {summary['split_option']})" if summary["split_option"] != "publisher" else ""
    print(f"split: {summary['split']}{chosen}")
    print(f"wrote {summary['manifest']} ({summary['bytes']} bytes) in {summary['seconds']} s")
    return 0
