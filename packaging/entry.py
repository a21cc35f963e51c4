"""Entry point of the PyInstaller bundle (see app.spec).

``cellseg-gui [args]`` starts the review window; ``cellseg-gui --cli COMMAND ...`` runs the
``cellseg`` command line from the same bundle (``--cli doctor`` for bug reports), so one
executable and one copy of PyTorch serve both.
"""
import sys

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--cli":
        from cellseg.core.cli import main as cli_main

        sys.exit(cli_main(sys.argv[2:]))
    from cellseg.app.main import main

    sys.exit(main())
