"""Parts of the ``flux-async`` command (`flux_async.cli`); not a public API.

Like the command itself, these modules use only flux_async's public API.
"""
