"""The CLI's tools besides training, one module each."""
