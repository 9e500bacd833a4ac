"""``python -m medseg`` runs the command-line tool, as the ``medseg`` script does."""

from medseg.cli import main

if __name__ == "__main__":
    main()
