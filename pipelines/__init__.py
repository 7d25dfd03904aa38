"""Entry points: thin command-line wrappers that build and run the Beam pipelines."""
