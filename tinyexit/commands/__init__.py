"""One module per `tinyexit` subcommand: HELP, add_arguments(parser), run(args) -> exit code."""


def add_data_arguments(parser, task_choices=("har", "kws", "vww")) -> None:
    parser.add_argument("--task", default="har", choices=task_choices, help="task (default: har)")
    parser.add_argument("--data", metavar="PATH",
                        help="dataset in its official layout (folder or archive); default: "
                             "../shared/datasets beside the project, or $TINYEXIT_DATASETS")


def add_seed_argument(parser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed repeats a run (default 0)")
