"""Commands built on the rest: bench, export, figures, the demo, the miniature paper, the GPU check."""
