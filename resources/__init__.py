"""cellseg.resources."""
