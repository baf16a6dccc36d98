"""Developer tools: `enrichd bench`, `enrichd tune` and the recall study. Not used by the daemon."""
