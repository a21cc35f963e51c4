"""cellseg.app."""
