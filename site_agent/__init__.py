"""The site agent: one edge data centre's private data and its ADMM subproblem."""
