"""cellseg.trainer."""
