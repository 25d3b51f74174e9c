"""python -m hma_check"""

from hma_check.cli import main

if __name__ == "__main__":
    main()
