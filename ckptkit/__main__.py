"""`python -m ckptkit ...`: the same command as the `ckptkit` console script."""
from ckptkit.cli import main

if __name__ == "__main__":
    main()
