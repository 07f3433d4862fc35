"""What the user looks at: the figures of the run folders."""
