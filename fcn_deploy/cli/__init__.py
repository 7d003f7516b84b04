"""Command-line shells over the Python API: parse arguments, call the API, print, exit."""
