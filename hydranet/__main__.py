"""``python -m hydranet`` (and ``torchrun -m hydranet``) run the CLI."""

from hydranet.cli import main

if __name__ == "__main__":
    main()
