"""The study pipeline: every stage of the paper as Ray work over the plain services."""
