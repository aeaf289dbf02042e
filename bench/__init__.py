"""`make bench`: every benchmark of the project, one table, figures against goals (never asserted)."""
