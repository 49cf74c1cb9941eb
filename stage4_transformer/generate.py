"""``generate.py`` is the stage-wide name for "produce text"; in stage 4 that is translation.

    python generate.py --interactive                         # the same as python translate.py --interactive
    python generate.py --input test.en --output test.hyp.fr  # one line out per line in

Every flag is translate.py's (``python translate.py --help``).
"""
from scripts.cli import run_cli
from stage4_transformer.translate import main

if __name__ == "__main__":
    run_cli(main)
