"""Entry point of the PyInstaller bundle (see app.spec).

``cellseg-gui [args]`` starts the review window; ``cellseg-gui --cli COMMAND ...`` runs the
``cellseg`` command line from the same bundle (``--cli doctor`` for bug reports), so one
executable and one copy of PyTorch serve both. ``cellseg-gui -m cellseg.app.cli COMMAND ...``
is the same: that is how the app starts ``cellseg train`` in a child process
(``sys.executable -m cellseg.app.cli``), and in a bundle ``sys.executable`` is this program.
"""
import sys

CLI_PREFIXES = (["--cli"], ["-m", "cellseg.app.cli"])

if __name__ == "__main__":
    for prefix in CLI_PREFIXES:
        if sys.argv[1:1 + len(prefix)] == prefix:
            from cellseg.app.cli import main as cli_main

            sys.exit(cli_main(sys.argv[1 + len(prefix):]))
    from cellseg.app.main import main

    sys.exit(main())
