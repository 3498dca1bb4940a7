"""`python -m albert_jax ...` is the `albert-jax` command line (for a checkout without the console script)."""

from albert_jax.jobs.cli import entry

if __name__ == "__main__":
    entry()
