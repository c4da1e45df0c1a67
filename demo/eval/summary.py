"""`python -m demo.eval.summary RESULTS.json ...`: the documented command of `demo.eval.publish.overview`."""
from .publish.overview import main

if __name__ == "__main__":
    main()
