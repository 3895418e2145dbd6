"""`python -m usage_metering ...` runs the command line."""

from usage_metering.cli import main

if __name__ == "__main__":
    main()
