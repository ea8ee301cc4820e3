"""``python -m lightning_bnn``: the LightningCLI entry point."""

from lightning_bnn.cli import main

if __name__ == "__main__":
    main()
