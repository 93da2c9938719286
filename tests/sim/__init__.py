"""A whole-system fault simulation with an oracle.

A seeded, randomized schedule runs against a real anvil, a real database (SQLite or
PostgreSQL) and real ``scanner`` processes reading the node through a fault proxy. It mixes, at
random times and depths: transfers (partial, exact, over, late, batch payouts paying several
payments in one transaction, native, reverted, to addresses nobody watches), blocks, reorgs of
any depth up to ``max_reorg_depth``, outages of the node with reorgs inside, a lagging replica,
a frozen head, ``null`` headers, 429s, malformed answers, ``kill -9`` of ``scanner run`` (and a
second instance beside it), every ``scanner run`` down for a few steps while backfills go on,
backfills and dry runs beside the live scan, and a gateway that
creates, edits, cancels and reopens payments. Then the faults stop and the scanner must bring
its cursor to the head within a bound; an oracle (:mod:`tests.sim.oracle`, a small model of the
design's rules that imports nothing of ``scanner``) says from the final chain (read from the
node) and the gateway's final rows what every payment must be, and :mod:`tests.sim.check`
compares the database and the event stream with it.

Restrictions that keep the oracle small and exact:

- one payment per address for the whole run (matching rules 1-4 then reduce to "the address's
  transfers of the payment's asset are the payment's");
- a reorg never rewrites a block the scanner may already count as final: such blocks keep their
  transactions (only their hashes change); the newer ones are reshuffled freely. Block
  timestamps are kept, so expiry decisions stand;
- one native payment stays open all along: full blocks (where native transfers are) are read only
  while one is, a known limit;
- the gateway never edits a ``confirmed`` payment, never switches a payment's token, and edits,
  cancels and reopens with one conditional ``UPDATE``.

Half the schedules (by their seed) run every process as ``streamed`` (a range of one transfer
or more planned a transfer at a time, its events stored as the plan makes them): the path a
range of thousands of transfers takes, which the simulation's small ranges would otherwise
never walk. A third (by their seed, apart from the rest) begin on a database no live
scan has seen: a backfill inserts the tokens' rows, and payments are made, paid, reorged and
backfilled for 20 to 60 steps; a backfill of the whole chain so far begins a few steps before
the first ``scanner run``, which starts at the head (its look-back finding what the backfills
did not read).

Modules: ``chain`` (the node, reorgs, the final chain), ``gateway``, ``processes``,
``streamed``, ``world`` (everything a schedule runs on), ``faults`` (kinds, weights, the
default set), ``schedule``, ``steps`` and ``disrupt`` (the steps), ``oracle``, ``check``,
``run`` (one schedule to its verdict), ``test_sim`` (the entry point).

Running it: ``pytest tests/sim`` runs ``SIM_SECONDS`` (default 40) of schedules per database;
``SIM_SECONDS=1800 pytest tests/sim -n 0 -s`` runs long and prints each failure as it happens.
A failure prints ``SIM_SEED=… SIM_STEPS=…``: set them to replay
that schedule (same steps; the scanner's timing is the machine's). ``SIM_FAULTS`` picks the
kinds (:mod:`tests.sim.faults`). Every run ends with a summary: schedules, faults by kind,
payments, transactions and events checked.
"""
