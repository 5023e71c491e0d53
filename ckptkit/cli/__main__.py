"""`python -m ckptkit.cli ...`: the same command as `ckptkit` (as when cli was one module)."""
from ckptkit.cli import main

if __name__ == "__main__":
    main()
