"""Load tests: concurrent API clients against the app launched on this machine.

`python -m demo.bench.load [--model teaching] [--clients 8] [--rounds 5] [--out docs/benchmarks.md]`
`python -m demo.bench.load --mixed [--model teaching] [--clients 8] [--minutes 3]`

Launches `app.py` on 127.0.0.1 (a free port; nothing else is contacted). By default, the steady test
(`steady`): each distinct request runs once alone for reference, then `clients` concurrent
`gradio_client` clients each run `rounds` full comparisons on the /compare endpoint (page defaults:
PGD-10 at 4/255, oblivious; one defense per paradigm). Checks: no request fails; every result equals the
same request run alone (same seed; images compared pixel by pixel, the results JSON without its timings);
the server's resident memory grows by less than 10% over the concurrent run; waiting clients are told
their queue position. With --mixed, the mixed test (`mixed`): cheap and heavy requests, cancels and
disconnects for a bounded time. The numbers go to their own section of the benchmark report and to a JSON
next to it. The whole run is bounded by --timeout; the server is stopped in every case. Exit status 0
only when every check passes.

`common` holds what both tests share (the server, the clients, result fingerprints); `steady` and `mixed`
import it and not each other.
"""
